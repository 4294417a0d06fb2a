(function () {
  var table = document.getElementById("problems");
  if (!table) return;
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var wrong = document.getElementById("wrong"), flag = document.getElementById("flag");
  var source = document.getElementById("source"), shown = document.getElementById("shown");
  function keep(row) {
    if (wrong.checked && row.getAttribute("data-right") !== "0") return false;
    var s = source.value, f = flag.value;
    if (s && row.getAttribute("data-sources").split(" ").indexOf(s) < 0) return false;
    if (!f) return true;
    return row.getAttribute("data-flags").split(" ").some(function (tag) {
      var p = tag.split(":");
      return p[1] === f && (!s || p[0] === s || p[0] === "problem");
    });
  }
  function filter() {
    var n = 0;
    rows.forEach(function (row) { var k = keep(row); row.hidden = !k; n += k ? 1 : 0; });
    shown.textContent = n;
  }
  [wrong, flag, source].forEach(function (el) { el.addEventListener("change", filter); });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    if (!th.hasAttribute("data-col")) return;
    th.addEventListener("click", function () {
      var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
      th.setAttribute("data-dir", dir > 0 ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
        var nx = parseFloat(x), ny = parseFloat(y);
        if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
        return dir * String(x).localeCompare(String(y));
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  filter();
  table.setAttribute("data-sortable", "yes");
})();
