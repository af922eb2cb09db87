// The Command Center's charts and cooldown countdowns. Loaded as a static file so the page works
// under the Content-Security-Policy; the chart data comes from a json_script block (not executable).
(function () {
  "use strict";

  var GREEN = "#1b7f3b";
  var RED = "#b3261e";
  var AMBER = "#a86200";
  var BLUE = "#1f5fbf";

  function readData() {
    var node = document.getElementById("chart-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  function targetLine(labels, value, label) {
    return {
      type: "line",
      label: label,
      data: labels.map(function () { return value; }),
      borderColor: AMBER,
      borderDash: [6, 4],
      borderWidth: 1,
      pointRadius: 0,
      fill: false,
    };
  }

  function charts(data) {
    if (typeof Chart === "undefined" || !data) {
      return;
    }
    // Days as MM-DD, as many as fit without slanting.
    var dayAxis = {
      ticks: {
        maxRotation: 0,
        autoSkip: true,
        callback: function (value) { return String(data.labels[value]).slice(5); },
      },
    };
    var common = {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      plugins: { legend: { position: "bottom" } },
    };
    new Chart(document.getElementById("chart-actions"), {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "ok", data: data.ok, backgroundColor: GREEN },
          { label: "fail", data: data.fail, backgroundColor: RED },
          { label: "unknown", data: data.unknown, backgroundColor: AMBER },
        ],
      },
      options: Object.assign({}, common, {
        scales: {
          x: Object.assign({ stacked: true }, dayAxis),
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
        },
      }),
    });
    // Bars, not lines: a day is a bar whatever the days around it hold, so one day of data reads
    // at a glance (a line through mostly empty days is a lone dot at the edge). The target is a
    // dashed line across the whole span, and the axes reach past it so it is always in view.
    new Chart(document.getElementById("chart-success"), {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "success rate", data: data.success_rate, backgroundColor: BLUE },
          targetLine(data.labels, data.targets.success_rate, "target"),
        ],
      },
      options: Object.assign({}, common, { scales: { x: dayAxis, y: { min: 0, max: 100 } } }),
    });
    new Chart(document.getElementById("chart-ttr"), {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "time to remediate", data: data.mttr_seconds, backgroundColor: BLUE },
          targetLine(data.labels, data.targets.mttr_seconds, "target"),
        ],
      },
      options: Object.assign({}, common, {
        scales: { x: dayAxis, y: { beginAtZero: true, suggestedMax: data.targets.mttr_seconds * 1.25 } },
      }),
    });
  }

  function countdowns() {
    var cells = document.querySelectorAll(".countdown[data-until]");
    if (!cells.length) {
      return;
    }
    function tick() {
      var now = Date.now();
      cells.forEach(function (cell) {
        var left = Math.max(0, Math.round((Date.parse(cell.dataset.until) - now) / 1000));
        cell.textContent = left > 0 ? Math.floor(left / 60) + " min " + (left % 60) + " s" : "over";
      });
    }
    tick();
    window.setInterval(tick, 1000);
  }

  charts(readData());
  countdowns();
})();
