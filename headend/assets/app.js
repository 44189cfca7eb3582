// Charts for the head-end pages, drawn by the vendored uPlot from JSON embedded in the page:
//   <div class="chart" data-chart="ID" data-kind="bars|line" data-unit="kWh"></div>
//   <script type="application/json" id="ID">{"x":[unix seconds…],"series":[{"label":"…","values":[…],"color":"#…"}]}</script>
// The same numbers are always in a table on the page: without JavaScript nothing is lost.
(function () {
  "use strict";
  if (typeof uPlot === "undefined") { return; }
  var palette = ["#0b5cad", "#e07b00", "#2e9d4a", "#8e44ad", "#c62828", "#5b6878"];
  var sr = (document.documentElement.lang || "sr").indexOf("sr") === 0;
  var monthsEn = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function two(n) { return (n < 10 ? "0" : "") + n; }
  // A time in Europe/Belgrade, 24-hour, as the pages write it: 3.12. 14:00 (sr), 3 Dec 14:00 (en);
  // `incr` is the axis step in seconds (0: the legend, which shows everything).
  function when(ts, incr) {
    var d = uPlot.tzDate(new Date(ts * 1e3), "Europe/Belgrade");
    var day = sr ? d.getDate() + "." + (d.getMonth() + 1) + "." : d.getDate() + " " + monthsEn[d.getMonth()];
    var month = sr ? (d.getMonth() + 1) + "." + d.getFullYear() + "." : monthsEn[d.getMonth()] + " " + d.getFullYear();
    var hm = two(d.getHours()) + ":" + two(d.getMinutes());
    if (incr >= 28 * 86400) { return month; }
    if (incr >= 86400) { return day; }
    if (incr > 0) { return hm === "00:00" ? day : hm; }
    return (sr ? day + d.getFullYear() + "." : day + " " + d.getFullYear()) + " " + hm;
  }
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
    var xlabel = el.getAttribute("data-xlabel") || (sr ? "Vreme" : "Time");
    series[0] = isTime
      ? { label: xlabel, value: function (u, v) { return v == null ? "–" : when(v, 0); } }
      : { label: xlabel };
    var opts = {
      width: Math.max(280, el.clientWidth), height: 260, series: series,
      // Times are shown in Europe/Belgrade whatever the browser's own time zone is.
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Europe/Belgrade"); },
      scales: {
        // One point (a first bill, a first day) gets a sensible span around it, not years.
        x: { time: isTime, range: function (u, min, max) { return min === max ? [min - 15 * 86400, max + 15 * 86400] : [min, max]; } },
        // Bars start at zero: a short bar must look short.
        y: kind === "bars" ? { range: function (u, min, max) { return [Math.min(0, min), max > 0 ? max * 1.08 : 1]; } } : {}
      },
      axes: [isTime ? { values: function (u, splits, ax, space, incr) { return splits.map(function (v) { return when(v, incr); }); } } : {}, { label: unit, size: 60 }],
      legend: { live: true }
    };
    var plot = new uPlot(opts, cols, el);
    window.addEventListener("resize", function () { plot.setSize({ width: Math.max(280, el.clientWidth), height: 260 }); });
    el.setAttribute("data-drawn", "1");
  }
  document.querySelectorAll(".chart[data-chart]").forEach(draw);
})();
