(function () {
  "use strict";
  var box = document.getElementById("refresh");
  if (!box) { return; }
  var text = document.getElementById("refresh-text");
  var button = document.getElementById("refresh-button");
  var period = parseInt(box.getAttribute("data-seconds"), 10) || 10;
  var key = "liandong-status-paused";
  var paused = false;
  try { paused = window.sessionStorage.getItem(key) === "1"; } catch (e) { paused = false; }
  var left = period;
  function show() {
    text.textContent = paused
      ? box.getAttribute("data-paused")
      : box.getAttribute("data-running").replace("{n}", String(left));
    button.textContent = paused ? box.getAttribute("data-resume") : box.getAttribute("data-pause");
    button.setAttribute("aria-pressed", paused ? "true" : "false");
    box.classList.toggle("paused", paused);
  }
  button.addEventListener("click", function () {
    paused = !paused;
    try { window.sessionStorage.setItem(key, paused ? "1" : "0"); } catch (e) { /* private mode */ }
    left = period;
    show();
  });
  window.setInterval(function () {
    if (paused) { return; }
    left -= 1;
    if (left <= 0) { window.location.reload(); return; }
    show();
  }, 1000);
  box.hidden = false;
  show();
})();
