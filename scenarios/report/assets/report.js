// The report's page: timeline, summary chart and node pages from the JSON
// the generator embedded. Lanes are drawn on one canvas, only those in view.
(() => {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const kinds = D.kinds, nodes = D.nodes, endMS = Math.max(D.end_ms, 1);
  const byName = new Map(nodes.map((n, i) => [n.name, i]));
  const evs = nodes.map(() => []);
  for (const e of D.events) evs[e[0]].push([e[1], kinds[e[2]], e[3], e[4], e[5], e[6]]);
  const lanes = nodes.map((n, i) => IL.buildLane(evs[i], endMS, n.state));
  const names = nodes.map(n => n.name);
  const GUTTER = 130, LANE = nodes.length > 300 ? 12 : 16;
  let rows = nodes.map((_, i) => i), selected = -1;

  const $ = id => document.getElementById(id);
  const gsel = $("group-filter"), ssel = $("state-filter");
  for (const g of [...new Set(nodes.map(n => n.group))].sort()) gsel.add(new Option(g, g));
  for (const s of [...new Set(nodes.map(n => n.state))].sort()) ssel.add(new Option(s || "(none)", s));
  IL.paintStates(document);
  IL.marksLegend($("marks-legend"));

  const tl = $("timeline"), lanesCv = $("lanes"), spacer = $("timeline-spacer"), tip = $("tooltip");
  let frame = 0;
  function view() {
    return { lanes, rows, names, endMS, gutter: GUTTER, laneH: LANE, scrollTop: tl.scrollTop,
      viewH: Math.min(tl.clientHeight || 560, Math.max(LANE, rows.length * LANE)), selected, width: lanesCv.clientWidth };
  }
  function drawTimeline() {
    frame = 0;
    const v = view();
    // The canvas is sticky at the top of the scroller; the spacer makes
    // the scroll height of all lanes.
    spacer.style.height = Math.max(0, rows.length * LANE - v.viewH) + "px";
    IL.drawLanes(lanesCv, v);
    IL.drawAxis($("axis"), endMS, GUTTER);
  }
  function schedule() { if (!frame) frame = requestAnimationFrame(drawTimeline); }
  function applyFilter() {
    const g = gsel.value, s = ssel.value;
    rows = [];
    nodes.forEach((n, i) => { if ((!g || n.group === g) && (!s || n.state === s)) rows.push(i); });
    $("lane-count").textContent = rows.length + " of " + nodes.length + " nodes";
    const states = IL.drawSummary($("summary"), lanes, rows, endMS, GUTTER);
    IL.legend($("legend"), states, st => { ssel.value = ssel.value === st ? "" : st; applyFilter(); });
    tl.scrollTop = 0;
    tl.style.height = Math.min(560, Math.max(LANE, rows.length * LANE) + 2) + "px";
    drawTimeline();
  }
  gsel.addEventListener("change", applyFilter);
  ssel.addEventListener("change", applyFilter);
  tl.addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", () => { applyFilter(); });

  function pos(ev) { const r = lanesCv.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }
  lanesCv.addEventListener("mousemove", ev => {
    const [x, y] = pos(ev), h = IL.hit(view(), x, y);
    if (!h) { tip.hidden = true; return; }
    const n = nodes[h.node];
    let txt = n.name + " @ " + IL.secs(h.t) + " s\nstate: " + (h.state || "(none)");
    if (h.mark) {
      const [t, kind, e, msg, from, to] = h.mark;
      txt += "\n" + ((IL.MARKS[kind] || {}).label || kind) + " at " + IL.secs(t) + " s: " + e;
      if (to && from !== to) txt += " (" + from + " → " + to + ")";
      if (msg) txt += "\n" + (msg.length > 300 ? msg.slice(0, 300) + "…" : msg);
    }
    tip.textContent = txt;
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 470) + "px";
    tip.style.top = (ev.clientY + 14) + "px";
  });
  lanesCv.addEventListener("mouseleave", () => { tip.hidden = true; });
  window.addEventListener("scroll", () => { tip.hidden = true; }, { passive: true });
  lanesCv.addEventListener("click", ev => {
    const [x, y] = pos(ev), h = IL.hit(view(), x, y);
    tip.hidden = true;
    if (h) location.hash = "node=" + encodeURIComponent(nodes[h.node].name);
  });
  document.querySelectorAll("table.nodes tr[data-node]").forEach(tr =>
    tr.addEventListener("click", () => { location.hash = "node=" + encodeURIComponent(tr.dataset.node); }));

  function showNode(name) {
    const i = byName.get(name), box = $("node");
    if (i === undefined) { box.hidden = true; selected = -1; schedule(); return; }
    const n = nodes[i];
    selected = i;
    $("node-name").textContent = n.name;
    const facts = [["UUID", n.uuid], ["group", n.group], ["driver", n.driver], ["final state", n.state],
      ["power", n.power], ["maintenance", n.maintenance ? "yes" : "no"],
      ["deploy time", n.deploy_s ? n.deploy_s.toFixed(2) + " s" : "-"], ["last_error", n.last_error || "-"]];
    const failed = D.checks.filter(c => (c.nodes || []).includes(n.name)).map(c => c.name);
    if (failed.length) facts.push(["failed checks", failed.join("; ")]);
    $("node-facts").innerHTML = facts.map(([k, v]) => "<tr><th>" + IL.esc(k) + '</th><td class="fact-' +
      k.replace(/\W+/g, "-") + '">' + IL.esc(v) + "</td></tr>").join("");
    $("node-events").tBodies[0].innerHTML = evs[i].map(([t, kind, e, from, to, msg]) =>
      "<tr><td>" + IL.secs(t) + "</td><td>" + IL.esc(kind) + "</td><td>" + IL.esc(e) + "</td><td>" +
      (to && from !== to ? IL.esc(from + " → " + to) : "") + "</td><td>" + IL.esc(msg || "") + "</td></tr>").join("");
    $("node-console").textContent = n.console || "(no console output)";
    box.hidden = false;
    // Bring the node's lane into view when a filter hides it.
    if (!rows.includes(i)) { gsel.value = ""; ssel.value = ""; applyFilter(); }
    const r = rows.indexOf(i);
    if (r * LANE < tl.scrollTop || r * LANE > tl.scrollTop + tl.clientHeight - LANE) tl.scrollTop = Math.max(0, r * LANE - 40);
    schedule();
    box.scrollIntoView({ block: "start" });
  }
  function route() {
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.has("group") || h.has("state")) {
      gsel.value = h.get("group") || ""; ssel.value = h.get("state") || ""; applyFilter();
      document.getElementById("timeline-section").scrollIntoView({ block: "start" });
    }
    showNode(h.get("node") || "");
  }
  $("node-close").addEventListener("click", ev => { ev.preventDefault(); history.replaceState(null, "", "#"); showNode(""); });
  window.addEventListener("hashchange", route);
  applyFilter();
  route();
  // The ready marker tests and benchmarks wait for, and how long it took
  // from the start of navigation.
  document.body.dataset.readyMs = String(Math.round(performance.now()));
  document.body.dataset.ready = "1";
})();
