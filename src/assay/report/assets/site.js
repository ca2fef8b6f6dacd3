/* Sortable tables for the assay report site (no dependencies, no network).
 *
 * Every <table class="sortable">: clicking a header sorts its rows ascending, clicking the
 * same header again descending (and so on). Cells with a data-sort attribute sort by that
 * number (empty: last in either direction); others by their text (locale compare, numeric
 * aware). Ties keep their previous order. The header's aria-sort says the current order.
 */
(function () {
  "use strict";

  function cellKey(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-sort");
    if (numeric) {
      if (raw === null) { raw = cell.textContent.trim(); }
      var value = parseFloat(raw);
      return isNaN(value) ? null : value;
    }
    return raw !== null ? raw : cell.textContent.trim();
  }

  function compare(a, b, numeric) {
    if (a === null && b === null) { return 0; }
    if (a === null) { return 1; }
    if (b === null) { return -1; }
    if (numeric) { return a < b ? -1 : a > b ? 1 : 0; }
    return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(table, th) {
    var headers = table.tHead ? table.tHead.rows[0].cells : [];
    var index = Array.prototype.indexOf.call(headers, th);
    var numeric = th.getAttribute("data-type") === "num";
    var direction = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var sign = direction === "ascending" ? 1 : -1;
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.slice.call(body.rows).map(function (row, position) {
        return { row: row, key: cellKey(row, index, numeric), position: position };
      });
      rows.sort(function (x, y) {
        // missing values last in both directions
        if (x.key === null || y.key === null) {
          var missing = compare(x.key, y.key, numeric);
          return missing !== 0 ? missing : x.position - y.position;
        }
        var order = sign * compare(x.key, y.key, numeric);
        return order !== 0 ? order : x.position - y.position;
      });
      rows.forEach(function (item) { body.appendChild(item.row); });
    });
    Array.prototype.forEach.call(headers, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", direction);
  }

  function init() {
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead) { return; }
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
        th.addEventListener("click", function () { sortBy(table, th); });
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
