// Alicerce console: the few behaviours htmx does not cover. No inline script anywhere
// (the Content-Security-Policy forbids it): charts read their data from JSON blocks.
(function () {
  "use strict";

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#2563eb";
  }

  function draw(el) {
    if (el.dataset.drawn || typeof uPlot === "undefined") return;
    const source = document.getElementById(el.dataset.source);
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const width = Math.max(240, Math.min(el.clientWidth || 640, 900));
    const small = el.classList.contains("small");
    let opts, series;
    if (el.dataset.chart === "loss") {
      opts = { width: small ? 260 : width, height: small ? 90 : 220, legend: { show: !small },
        scales: { x: { time: false } },
        series: [{}, { label: "loss", stroke: css("--accent"), spanGaps: true },
                 { label: "eval loss", stroke: css("--warn"), spanGaps: true }] };
      series = [data.x, data.y, data.y2];
    } else {
      opts = { width: width, height: 240, scales: { x: { time: false } },
        axes: [{ values: (u, ticks) => ticks.map(t => data.labels[t - 1] || "") }, {}],
        series: [{}, { label: data.metric, stroke: css("--accent"), width: 2, points: { show: true } },
                 { label: "95% CI low", stroke: css("--muted"), dash: [4, 4] },
                 { label: "95% CI high", stroke: css("--muted"), dash: [4, 4] }] };
      series = [data.x, data.y, data.low, data.high];
    }
    el.dataset.drawn = "1";
    new uPlot(opts, series, el);
  }

  function init(root) {
    root.querySelectorAll("[data-chart]").forEach(draw);
    root.querySelectorAll("input[data-select]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
      input.focus();
    });
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (e) { init(e.target); });
})();
