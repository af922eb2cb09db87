// Keep the part of the address after "#" across sign-in: a link such as /ops/#job-42 opened while
// signed out comes back to /ops/#job-42, not /ops/. Browsers never send the fragment to the
// server, so the page adds it to where it will return ("next") before the form or link is used.
(function () {
  "use strict";
  var hash = window.location.hash;
  if (!/^#[A-Za-z0-9_.:-]{1,100}$/.test(hash)) {
    return;
  }
  var next = document.querySelector('form input[name="next"]');
  if (next && next.value && next.value.indexOf("#") < 0) {
    next.value = next.value + hash;
  }
  var sso = document.querySelector("a[data-sso-link]");
  if (sso) {
    var url = new URL(sso.href, window.location.href);
    var target = url.searchParams.get("next");
    if (target && target.indexOf("#") < 0) {
      url.searchParams.set("next", target + hash);
      sso.href = url.pathname + url.search;
    }
  }
})();
