// The live console: follows GET /events and keeps the newest events on top.
// Loaded as a static file so the page works under the Content-Security-Policy (no inline code).
(function () {
  "use strict";

  var MAX_ROWS = 500;
  var root = document.getElementById("console");
  if (!root || typeof EventSource === "undefined") {
    return;
  }
  var body = document.getElementById("events-body");
  var connection = document.getElementById("connection");
  var pauseButton = document.getElementById("pause");
  var buffered = document.getElementById("buffered");
  var notice = document.getElementById("notice");
  var empty = document.getElementById("empty");

  var paused = false;
  var held = [];
  var lastId = Number(root.dataset.through || "0");

  function setConnection(state, text) {
    connection.className = "conn conn-" + state;
    connection.textContent = text;
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = false;
  }

  // Control characters, DEL and the line/paragraph separators as \uXXXX, as the server-rendered
  // rows show them (autoheal_site.text.visible): an alert cannot hide text or break a row.
  function visible(text) {
    return String(text).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, function (c) {
      return "\\u" + ("000" + c.charCodeAt(0).toString(16)).slice(-4);
    });
  }

  function cell(text, className) {
    var td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    // textContent, never innerHTML: event fields come from alerts and must not become markup.
    td.textContent = text == null ? "" : visible(text);
    return td;
  }

  function row(event) {
    var tr = document.createElement("tr");
    tr.dataset.id = String(event.id);
    tr.dataset.kind = event.kind;
    tr.className = "fresh";
    tr.appendChild(cell(event.id, "num"));
    tr.appendChild(cell(event.ts, "ts"));
    var kindCell = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "kind kind-" + event.kind;
    badge.textContent = event.kind;
    kindCell.appendChild(badge);
    tr.appendChild(kindCell);
    tr.appendChild(cell(event.alertname));
    tr.appendChild(cell(event.target));
    tr.appendChild(cell(event.policy));
    tr.appendChild(cell(event.message, "message"));
    tr.appendChild(cell(event.actor));
    return tr;
  }

  function show(events) {
    var fragment = document.createDocumentFragment();
    for (var i = events.length - 1; i >= 0; i--) {
      fragment.appendChild(row(events[i]));
    }
    body.insertBefore(fragment, body.firstChild);
    while (body.rows.length > MAX_ROWS) {
      body.deleteRow(body.rows.length - 1);
    }
    empty.hidden = body.rows.length > 0;
  }

  function updateBuffered() {
    buffered.hidden = held.length === 0;
    buffered.textContent = held.length + " new while paused";
  }

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", paused ? "true" : "false");
    if (!paused && held.length) {
      show(held);
      held = [];
    }
    updateBuffered();
  });

  var params = new URLSearchParams();
  if (root.dataset.kind) {
    params.set("kind", root.dataset.kind);
  }
  if (root.dataset.alertname) {
    params.set("alertname", root.dataset.alertname);
  }
  // Start right after what the page rendered: nothing in between is missed. On its own
  // reconnects the browser sends Last-Event-ID, which the server prefers to this parameter.
  params.set("lastEventId", String(lastId));
  var source = new EventSource(root.dataset.streamUrl + "?" + params.toString());

  source.addEventListener("open", function () {
    setConnection("live", "live");
  });
  source.addEventListener("stream-open", function () {
    setConnection("live", "live");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      setConnection("down", "disconnected");
      showNotice("The live stream was refused or closed. Reload the page (you may need to log in again).");
    } else {
      setConnection("connecting", "reconnecting");
    }
  });
  source.addEventListener("audit", function (message) {
    var event = JSON.parse(message.data);
    if (event.id <= lastId) {
      return; // already shown
    }
    lastId = event.id;
    if (paused) {
      held.push(event);
      updateBuffered();
    } else {
      show([event]);
    }
  });
  source.addEventListener("stream-reset", function () {
    // Events were missed beyond what the server can replay: start again from a fresh page.
    source.close();
    setConnection("connecting", "reloading");
    showNotice("Some events could not be replayed; reloading the latest.");
    window.setTimeout(function () {
      window.location.reload();
    }, 1000);
  });
  source.addEventListener("stream-error", function (message) {
    source.close();
    setConnection("down", "error");
    var text = "The live stream stopped.";
    try {
      text = JSON.parse(message.data).text || text;
    } catch (ignored) {
      // keep the generic text
    }
    showNotice(text);
  });
})();
