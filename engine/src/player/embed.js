// shardcast embed: put the player of stream __STREAM__ on a page.
//
//   <div id="tv" style="width: 640px; aspect-ratio: 16 / 9"></div>
//   <script src="https://media.example.com/__STREAM__/embed.js" data-target="tv"></script>
//
// The player fills the element named by data-target (or is placed where the script tag is).
// data-format="fmp4" or "dash" plays the stream's CMAF rendition (HLS in fMP4, or DASH).
// It is loaded from where this script was loaded from, so it works through the same reverse
// proxy or CDN; a public base URL configured on the server takes precedence.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = "__BASE__" || new URL("..", script.src).href;
  if (base.charAt(base.length - 1) !== "/") base += "/";
  var frame = document.createElement("iframe");
  var format = script.dataset.format;
  frame.src = base + "__STREAM__.html" + (format ? "?format=" + encodeURIComponent(format) : "");
  frame.title = "__STREAM__";
  frame.allow = "autoplay; fullscreen; picture-in-picture";
  frame.allowFullscreen = true;
  frame.style.cssText = "border: 0; width: 100%; height: 100%; min-height: 180px; display: block";
  var target = script.dataset.target && document.getElementById(script.dataset.target);
  if (target) {
    target.appendChild(frame);
  } else {
    var box = document.createElement("div");
    box.style.cssText = "width: 100%; max-width: 960px; aspect-ratio: 16 / 9";
    box.appendChild(frame);
    script.parentNode.insertBefore(box, script);
  }
})();
