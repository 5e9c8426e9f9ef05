// The live dashboard: a grid of nodes fed by the dashboard's server-sent
// events, a node's timeline and console on click, and buttons that call the
// driver's API (proxied by the dashboard under /v1, the same origin).
(() => {
  const $ = id => document.getElementById(id);
  const nodes = new Map(); // name -> view
  const tiles = new Map(); // name -> element
  let selected = "", images = [], ready = false;
  const grid = $("grid");

  function tileText(v) {
    let st = v.state || "(none)";
    if (v.target) st += " → " + v.target;
    return '<div class="nm">' + IL.esc(v.name) + '</div><div class="st">' + IL.esc(st) + '</div><div class="dim">' +
      IL.esc(v.power || "") + (v.maintenance ? " · maint." : "") + (v.last_error ? " · error" : "") + "</div>";
  }
  function paint(v) {
    let el = tiles.get(v.name);
    if (!el) {
      el = document.createElement("div");
      el.className = "tile";
      el.addEventListener("click", () => select(el.dataset.node));
      tiles.set(v.name, el);
      grid.appendChild(el);
    }
    el.dataset.node = v.name;
    el.dataset.state = v.state;
    el.title = v.name + ": " + v.state + (v.last_error ? "\n" + v.last_error : "");
    el.style.background = IL.stateColor(v.state);
    el.classList.toggle("selected", v.name === selected);
    el.innerHTML = tileText(v);
  }
  function legend() {
    const c = {};
    for (const v of nodes.values()) c[v.state] = (c[v.state] || 0) + 1;
    const states = Object.keys(c).sort();
    IL.legend($("legend"), states);
    $("legend").querySelectorAll(".item").forEach(x => { x.append(" " + c[x.dataset.state]); });
    $("count").textContent = nodes.size + " nodes";
  }
  let legendTimer = 0;
  // A big lab's burst of changes redraws the legend once.
  function later() {
    if (nodes.size < 300) { legend(); return; }
    if (!legendTimer) legendTimer = setTimeout(() => { legendTimer = 0; legend(); }, 200);
  }

  const es = new EventSource("events");
  es.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "badge ok"; });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting"; $("conn").className = "badge bad"; });
  es.addEventListener("snapshot", ev => {
    const s = JSON.parse(ev.data);
    $("title").textContent = s.title || "";
    $("driver-url").textContent = s.driver_url || "";
    $("status").textContent = s.error || "";
    images = s.images || [];
    $("image").innerHTML = images.map(i => '<option value="' + IL.esc(i.id) + '">' + IL.esc(i.id) + "</option>").join("");
    nodes.clear(); tiles.clear(); grid.innerHTML = "";
    for (const v of s.nodes) { nodes.set(v.name, v); paint(v); }
    legend();
    if (selected && nodes.has(selected)) showNode(); else if (selected) closeNode();
    if (!ready) { ready = true; document.body.dataset.ready = "1"; }
  });
  es.addEventListener("node", ev => {
    const v = JSON.parse(ev.data);
    nodes.set(v.name, v);
    paint(v);
    later();
    if (v.name === selected) showNode();
  });
  es.addEventListener("gone", ev => {
    const v = JSON.parse(ev.data);
    nodes.delete(v.name);
    const el = tiles.get(v.name);
    if (el) el.remove();
    tiles.delete(v.name);
    later();
    if (v.name === selected) closeNode();
  });
  es.addEventListener("status", ev => { $("status").textContent = JSON.parse(ev.data).error || ""; });

  // The driver's API, as any client calls it.
  async function api(method, path, body) {
    const r = await fetch(path, {
      method, headers: { "Content-Type": "application/json", "X-OpenStack-Ironic-API-Version": "latest" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) {
      let msg = text;
      try { const e = JSON.parse(text); msg = e.error_message; try { msg = JSON.parse(msg).faultstring || msg; } catch (_) { } } catch (_) { }
      throw new Error(method + " " + path + ": " + r.status + " " + msg);
    }
    return text ? JSON.parse(text) : null;
  }

  function select(name) {
    selected = name;
    for (const [n, el] of tiles) el.classList.toggle("selected", n === name);
    $("action-result").textContent = "";
    showNode();
    $("node").scrollIntoView({ block: "start" });
  }
  function closeNode() {
    selected = "";
    $("node").hidden = true;
    for (const el of tiles.values()) el.classList.remove("selected");
  }
  $("node-close").addEventListener("click", ev => { ev.preventDefault(); closeNode(); });

  function showNode() {
    const v = nodes.get(selected);
    if (!v) return;
    $("node").hidden = false;
    $("node-name").textContent = v.name;
    const st = $("node-state");
    st.textContent = v.state + (v.target ? " → " + v.target : "");
    st.dataset.state = v.state;
    st.style.background = IL.stateColor(v.state);
    const facts = [["UUID", v.uuid], ["group", v.group || "-"], ["driver", v.driver], ["power", v.power || "-"],
      ["maintenance", v.maintenance ? "yes" : "no"], ["last_error", v.last_error || "-"]];
    if (!v.enrolled) facts.push(["enrolled", "no: press enroll, or baremetal create nodes.yaml"]);
    $("node-facts").innerHTML = facts.map(([k, x]) => "<tr><th>" + IL.esc(k) + "</th><td>" + IL.esc(x) + "</td></tr>").join("");
    document.querySelectorAll("#verbs button, #powers button").forEach(b => {
      b.disabled = b.id === "enroll" ? v.enrolled || !v.enroll : !v.enrolled;
    });
    refresh();
  }

  let refreshing = false, again = false;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      do { again = false; await loadDetail(); } while (again);
    } finally { refreshing = false; }
  }
  async function loadDetail() {
    const v = nodes.get(selected);
    if (!v) return;
    let evs = [];
    if (v.enrolled) {
      try {
        const r = await api("GET", "v1/nodes/" + encodeURIComponent(v.uuid) + "/events");
        evs = r.events || [];
      } catch (e) {
        try {
          const r = await api("GET", "v1/nodes/" + encodeURIComponent(v.uuid) + "/history");
          evs = (r.history || []).map(h => ({ time: h.created_at, kind: h.event_type, event: h.event, message: "" }));
        } catch (_) { }
      }
    }
    if (v.name !== selected) return;
    drawNode(v, evs);
    try {
      const r = await fetch("console/" + encodeURIComponent(v.name));
      $("node-console").textContent = r.ok ? (await r.text()) || "(no console output yet)" : "(no console: " + r.status + ")";
      const pre = $("node-console");
      pre.scrollTop = pre.scrollHeight;
    } catch (_) { }
  }

  let laneView = null;
  function drawNode(v, evs) {
    const t0 = evs.length ? Date.parse(evs[0].time) : Date.now();
    const rows = evs.map(e => [Date.parse(e.time) - t0, e.kind, e.event || "", e.from_state || "", e.to_state || "", e.message || ""]);
    const end = Math.max(1000, Date.now() - t0);
    const lane = IL.buildLane(rows, end, v.state);
    laneView = { lanes: [lane], rows: [0], names: [v.name], endMS: end, gutter: 130, laneH: 26, scrollTop: 0, viewH: 26, selected: -1 };
    IL.drawAxis($("axis"), end, 130);
    IL.drawLanes($("lane"), laneView);
    laneView.width = $("lane").clientWidth;
    $("node-events").tBodies[0].innerHTML = rows.slice(-300).reverse().map(([t, kind, e, from, to, msg]) =>
      "<tr><td>" + IL.secs(t) + "</td><td>" + IL.esc(kind) + "</td><td>" + IL.esc(e) + "</td><td>" +
      (to && from !== to ? IL.esc(from + " → " + to) : "") + "</td><td>" + IL.esc(msg) + "</td></tr>").join("");
  }
  const laneCv = $("lane"), tip = $("tooltip");
  laneCv.addEventListener("mousemove", ev => {
    if (!laneView) return;
    const r = laneCv.getBoundingClientRect(), h = IL.hit(laneView, ev.clientX - r.left, ev.clientY - r.top);
    if (!h) { tip.hidden = true; return; }
    let txt = IL.secs(h.t) + " s: " + (h.state || "(none)");
    if (h.mark) txt += "\n" + ((IL.MARKS[h.mark[1]] || {}).label || h.mark[1]) + ": " + h.mark[2] + (h.mark[3] ? "\n" + h.mark[3] : "");
    tip.textContent = txt; tip.hidden = false;
    tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 14) + "px";
  });
  laneCv.addEventListener("mouseleave", () => { tip.hidden = true; });
  window.addEventListener("scroll", () => { tip.hidden = true; }, { passive: true });

  async function act(label, f) {
    const out = $("action-result");
    out.className = ""; out.textContent = label + " …";
    try {
      await f();
      out.className = "ok"; out.textContent = label + ": accepted";
    } catch (e) {
      out.className = "bad"; out.textContent = label + ": " + e.message;
    }
  }
  document.querySelectorAll("#verbs button").forEach(b => b.addEventListener("click", () => {
    const v = nodes.get(selected), verb = b.dataset.verb;
    if (!v) return;
    act(b.textContent + " " + v.name, async () => {
      if (verb === "enroll") {
        const n = await api("POST", "v1/nodes", v.enroll);
        for (const mac of v.ports || []) await api("POST", "v1/ports", { node_uuid: n.uuid, address: mac });
        return;
      }
      const path = "v1/nodes/" + encodeURIComponent(v.uuid);
      if (verb === "active" || verb === "rebuild") {
        const img = images.find(i => i.id === $("image").value);
        if (img) {
          await api("PATCH", path, [
            { op: "add", path: "/instance_info/image_source", value: img.url },
            { op: "add", path: "/instance_info/image_os_hash_algo", value: "sha256" },
            { op: "add", path: "/instance_info/image_os_hash_value", value: img.sha256 },
          ]);
        }
      }
      await api("PUT", path + "/states/provision", { target: verb });
    });
  }));
  document.querySelectorAll("#powers button[data-power]").forEach(b => b.addEventListener("click", () => {
    const v = nodes.get(selected);
    if (v) act(b.textContent + " " + v.name, () => api("PUT", "v1/nodes/" + encodeURIComponent(v.uuid) + "/states/power", { target: b.dataset.power }));
  }));
  document.querySelectorAll("#powers button[data-maint]").forEach(b => b.addEventListener("click", () => {
    const v = nodes.get(selected);
    if (!v) return;
    const path = "v1/nodes/" + encodeURIComponent(v.uuid) + "/maintenance";
    act("maintenance " + b.dataset.maint + " " + v.name, () =>
      b.dataset.maint === "on" ? api("PUT", path, { reason: "set from the dashboard" }) : api("DELETE", path));
  }));
  setInterval(() => { if (selected) refresh(); }, 3000);
})();
