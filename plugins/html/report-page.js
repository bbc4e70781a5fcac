/* cpost report page: draws every chart from the inline JSON with uPlot (inlined above). */
(function () {
  "use strict";
  var t0 = performance.now();
  var data = JSON.parse(document.getElementById("cpost-data").textContent);
  var HEIGHT = 220;
  var made = [];

  function widthOf(el) {
    return Math.max(320, el.clientWidth || 900);
  }
  function fmt(v) {
    var a = Math.abs(v);
    return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
  }
  // Resource charts start at zero: a 2 % wiggle must not look like a cliff.
  function fromZero(u, min, max) {
    var top = max > 0 ? max * 1.05 : 1;
    return [Math.min(0, min), top];
  }

  // At least a second wide: a single sample would otherwise get an axis of identical ticks.
  function atLeastASecond(u, min, max) {
    return max - min >= 1 ? [min, max] : [min, min + 1];
  }

  data.charts.forEach(function (c) {
    var el = document.getElementById(c.id);
    var n = c.x.length;
    var drawn = 0;
    var columns = [c.x];
    var series = [
      {
        label: "time",
        value: function (u, v) {
          return v == null ? "-" : v.toFixed(3) + " s";
        },
      },
    ];
    c.series.forEach(function (s) {
      columns.push(s.values || new Array(n).fill(s.value));
      series.push({
        label: s.label,
        stroke: s.color,
        width: s.role === "data" ? 1.25 : 1.5,
        dash: s.role === "data" ? undefined : [6, 4],
        spanGaps: true,
        points: { show: s.role === "data" && n < 60 },
        value: function (u, v) {
          return v == null ? "-" : fmt(v) + " " + c.unit;
        },
      });
    });
    var u = new uPlot(
      {
        width: widthOf(el),
        height: HEIGHT,
        scales: { x: { time: false, range: atLeastASecond }, y: { range: fromZero } },
        axes: [{ label: "seconds since the operator started" }, { label: c.unit, size: 64 }],
        series: series,
        hooks: {
          drawSeries: [
            function () {
              drawn++;
            },
          ],
        },
      },
      columns,
      el,
    );
    made.push({ chart: c, el: el, u: u, drawn: function () { return drawn; } });
  });

  var pending = 0;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      made.forEach(function (m) {
        m.u.setSize({ width: widthOf(m.el), height: HEIGHT });
      });
    }, 100);
  });

  // After the draws uPlot queues as microtasks: the time until charts are on screen.
  setTimeout(function () {
    window.cpostReport = {
      renderMs: performance.now() - t0,
      // Since navigation started: what a person waits, parsing the page included.
      readyMs: performance.now(),
      charts: made.map(function (m) {
        return {
          id: m.chart.id,
          operator: m.chart.operator,
          group: m.chart.group,
          points: m.chart.x.length,
          seriesDrawn: m.drawn(),
          yMax: m.u.scales.y.max,
          colors: m.chart.series
            .filter(function (s) { return s.role === "data"; })
            .map(function (s) { return s.color; }),
        };
      }),
    };
    document.documentElement.setAttribute("data-cpost-ready", "1");
  }, 0);
})();
