// Charts for the head-end pages, drawn by the vendored uPlot from JSON embedded in the page:
//   <div class="chart" data-chart="ID" data-kind="bars|line" data-unit="kWh"></div>
//   <script type="application/json" id="ID">{"x":[unix seconds…],"series":[{"label":"…","values":[…],"color":"#…"}]}</script>
// The same numbers are always in a table on the page: without JavaScript nothing is lost.
(function () {
  "use strict";
  if (typeof uPlot === "undefined") { return; }
  var palette = ["#0b5cad", "#e07b00", "#2e9d4a", "#8e44ad", "#c62828", "#5b6878"];
  function draw(el) {
    var src = document.getElementById(el.getAttribute("data-chart"));
    if (!src) { return; }
    var data;
    try { data = JSON.parse(src.textContent); } catch (e) { return; }
    if (!data.x || data.x.length === 0) { return; }
    var kind = el.getAttribute("data-kind") || "bars";
    var unit = el.getAttribute("data-unit") || "";
    var bars = kind === "bars" ? uPlot.paths.bars({ size: [0.8, 60], align: 0 }) : null;
    var series = [{}];
    var cols = [data.x];
    data.series.forEach(function (s, i) {
      var c = s.color || palette[i % palette.length];
      series.push({
        label: s.label, stroke: c, width: kind === "bars" ? 0 : 2,
        fill: kind === "bars" ? c : undefined, paths: bars || undefined,
        points: { show: kind !== "bars" && data.x.length < 60 },
        value: function (u, v) { return v == null ? "–" : v.toLocaleString(undefined, { maximumFractionDigits: 3 }) + " " + unit; }
      });
      cols.push(s.values);
    });
    var isTime = data.time !== false;
    series[0] = isTime
      ? { label: el.getAttribute("data-xlabel") || "", value: "{YYYY}-{MM}-{DD} {HH}:{mm}" }
      : { label: el.getAttribute("data-xlabel") || "" };
    var opts = {
      width: Math.max(280, el.clientWidth), height: 260, series: series,
      // Times are shown in Europe/Belgrade whatever the browser's own time zone is.
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Europe/Belgrade"); },
      scales: {
        x: { time: isTime },
        // Bars start at zero: a short bar must look short.
        y: kind === "bars" ? { range: function (u, min, max) { return [Math.min(0, min), max > 0 ? max * 1.08 : 1]; } } : {}
      },
      axes: [{}, { label: unit, size: 60 }],
      legend: { live: true }
    };
    var plot = new uPlot(opts, cols, el);
    window.addEventListener("resize", function () { plot.setSize({ width: Math.max(280, el.clientWidth), height: 260 }); });
    el.setAttribute("data-drawn", "1");
  }
  document.querySelectorAll(".chart[data-chart]").forEach(draw);
})();
