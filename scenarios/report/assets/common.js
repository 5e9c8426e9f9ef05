// Shared by the report and the dashboard: state colours, lanes built from
// a node's events, and drawing them on canvases (only the lanes in view,
// so a run of thousands of nodes draws as fast as one of ten).
"use strict";

const IL = (() => {
  const STATE_COLORS = {
    "": "#e5e7eb", "enroll": "#cfd4dc", "verifying": "#b8c7e0", "manageable": "#9ecae1",
    "inspecting": "#c6b8e8", "inspect wait": "#b3a2e0", "inspect failed": "#e05a6b",
    "cleaning": "#fdd0a2", "clean wait": "#fdae6b", "clean failed": "#fb6a4a", "clean hold": "#f6c38e",
    "available": "#8fd19e", "deploying": "#6baed6", "wait call-back": "#4292c6", "deploy hold": "#5d9bd0",
    "active": "#2ca25f", "deleting": "#d9b3e6", "deploy failed": "#de2d26", "error": "#a50f15",
    "adopting": "#c7e9c0", "adopt failed": "#e34a33", "rescuing": "#fec44f", "rescue wait": "#fe9929",
    "rescue": "#ec7014", "rescue failed": "#cc4c02", "unrescuing": "#fee391", "servicing": "#d4b9da",
    "service wait": "#c994c7", "service failed": "#dd1c77", "not enrolled": "#f3f4f6",
  };
  const ORDER = Object.keys(STATE_COLORS);
  function stateColor(s) {
    if (s in STATE_COLORS) return STATE_COLORS[s];
    let h = 0;
    for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360;
    return "hsl(" + h + ",45%,70%)";
  }
  const MARKS = {
    power: { color: "#111827", label: "power action" },
    lookup: { color: "#1d4ed8", label: "lookup" },
    heartbeat: { color: "#6b7280", label: "heartbeat" },
    agent_command: { color: "#7c3aed", label: "agent command" },
    fault: { color: "#dc2626", label: "injected fault" },
    error: { color: "#991b1b", label: "error" },
    maintenance: { color: "#d97706", label: "maintenance" },
    pxe: { color: "#0f766e", label: "PXE step" },
    provision: { color: "#374151", label: "provision event" },
  };
  function esc(s) {
    return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function secs(ms) { return (ms / 1000).toFixed(ms < 10000 ? 2 : 1); }

  // lane: {segs: [[t0, t1, state]], marks: [[t, kind, event, message]]}
  // from events [[ms, kind, event, from, to, message]] in time order.
  function buildLane(evs, endMS, finalState) {
    const segs = [], marks = [];
    let cur = null, t0 = 0;
    for (const e of evs) {
      const [t, kind, ev, from, to, msg] = e;
      // Power events carry power states in from/to, not provision states.
      const prov = kind !== "power";
      // Before its first event (create) the driver did not know the node.
      if (cur === null && prov) { cur = from || (to ? "not enrolled" : finalState || ""); t0 = 0; }
      if (prov && to && to !== cur) {
        segs.push([t0, t, cur]);
        cur = to; t0 = t;
      }
      if (!(kind === "provision" && to && to !== from)) marks.push([t, kind, ev, msg, from, to]);
    }
    if (cur === null) cur = finalState || "";
    segs.push([t0, Math.max(endMS, t0), cur]);
    return { segs, marks };
  }

  function stateAt(lane, t) {
    for (let i = lane.segs.length - 1; i >= 0; i--) if (lane.segs[i][0] <= t) return lane.segs[i][2];
    return lane.segs.length ? lane.segs[0][2] : "";
  }

  function fitCanvas(cv, cssHeight) {
    const dpr = window.devicePixelRatio || 1;
    const w = cv.clientWidth || cv.parentElement.clientWidth || 800;
    cv.style.height = cssHeight + "px";
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(cssHeight * dpr)) {
      cv.width = Math.round(w * dpr);
      cv.height = Math.round(cssHeight * dpr);
    }
    const ctx = cv.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx, w, h: cssHeight };
  }

  function niceStep(span, px) {
    const want = span / Math.max(1, px / 90);
    const p = Math.pow(10, Math.floor(Math.log10(want)));
    for (const m of [1, 2, 5, 10]) if (m * p >= want) return m * p;
    return 10 * p;
  }

  function drawAxis(cv, endMS, gutter) {
    const { ctx, w, h } = fitCanvas(cv, 22);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#6b7280"; ctx.strokeStyle = "#c7ccd6"; ctx.font = "11px sans-serif";
    const span = Math.max(endMS, 1), pw = w - gutter - 8;
    const step = niceStep(span / 1000, pw) * 1000;
    for (let t = 0; t <= span; t += step) {
      const x = gutter + (t / span) * pw;
      ctx.beginPath(); ctx.moveTo(x + 0.5, 12); ctx.lineTo(x + 0.5, 22); ctx.stroke();
      ctx.fillText((t / 1000).toFixed(step < 1000 ? 1 : 0) + " s", x + 2, 10);
    }
  }

  function drawMark(ctx, kind, x, y, lh) {
    const m = MARKS[kind] || MARKS.provision;
    ctx.fillStyle = m.color; ctx.strokeStyle = m.color;
    switch (kind) {
      case "heartbeat": ctx.fillRect(x - 0.5, y + 1, 1, 4); break;
      case "lookup": ctx.fillRect(x - 2, y + lh - 6, 4, 4); break;
      case "power":
        ctx.beginPath(); ctx.moveTo(x - 4, y + 1); ctx.lineTo(x + 4, y + 1); ctx.lineTo(x, y + lh / 2 + 1); ctx.closePath(); ctx.fill(); break;
      case "agent_command": case "pxe":
        ctx.beginPath(); ctx.arc(x, y + lh / 2, 2.5, 0, 7); ctx.fill(); break;
      case "fault":
        ctx.lineWidth = 2; ctx.beginPath();
        ctx.moveTo(x - 4, y + 1); ctx.lineTo(x + 4, y + lh - 1); ctx.moveTo(x + 4, y + 1); ctx.lineTo(x - 4, y + lh - 1);
        ctx.stroke(); ctx.lineWidth = 1; break;
      case "error": ctx.fillRect(x - 1, y, 2, lh); break;
      case "maintenance":
        ctx.beginPath(); ctx.moveTo(x, y + 1); ctx.lineTo(x + 4, y + lh / 2); ctx.lineTo(x, y + lh - 1); ctx.lineTo(x - 4, y + lh / 2); ctx.closePath(); ctx.fill(); break;
      default: ctx.fillRect(x - 0.5, y + lh - 5, 1, 4);
    }
  }

  // drawLanes draws lanes[rows[first..]] that fall in the canvas.
  function drawLanes(cv, o) {
    const { lanes, rows, names, endMS, gutter, laneH, scrollTop, viewH, selected } = o;
    const { ctx, w, h } = fitCanvas(cv, viewH);
    ctx.clearRect(0, 0, w, h);
    const span = Math.max(endMS, 1), pw = w - gutter - 8;
    const X = t => gutter + (t / span) * pw;
    const first = Math.floor(scrollTop / laneH), last = Math.min(rows.length, Math.ceil((scrollTop + viewH) / laneH));
    ctx.font = "11.5px ui-monospace, DejaVu Sans Mono, monospace";
    ctx.textBaseline = "middle";
    for (let r = first; r < last; r++) {
      const i = rows[r], lane = lanes[i];
      const y = r * laneH - scrollTop;
      if (i === selected) { ctx.fillStyle = "#e8efff"; ctx.fillRect(0, y, w, laneH); }
      ctx.fillStyle = "#1d2330";
      // Keep a long name's end: "scenario/group-7" tells nodes apart by it.
      ctx.fillText(names[i].length > 17 ? "…" + names[i].slice(-16) : names[i], 4, y + laneH / 2);
      for (const [t0, t1, st] of lane.segs) {
        ctx.fillStyle = stateColor(st);
        ctx.fillRect(X(t0), y + 1, Math.max(1, X(t1) - X(t0)), laneH - 2);
      }
      let lastX = -10, lastKind = "";
      for (const [t, kind] of lane.marks) {
        const x = X(t);
        if (kind === lastKind && x - lastX < 1.5) continue; // thousands of heartbeats on one pixel
        drawMark(ctx, kind, x, y, laneH);
        lastX = x; lastKind = kind;
      }
    }
    return { first, last };
  }

  // hit finds what is under (x, y) of the lanes canvas.
  function hit(o, x, y) {
    const { lanes, rows, endMS, gutter, laneH, scrollTop, width } = o;
    const r = Math.floor((y + scrollTop) / laneH);
    if (r < 0 || r >= rows.length) return null;
    const i = rows[r], lane = lanes[i];
    const span = Math.max(endMS, 1), pw = width - gutter - 8;
    const t = ((x - gutter) / pw) * span;
    let best = null, bd = 6;
    for (const m of lane.marks) {
      const d = Math.abs(gutter + (m[0] / span) * pw - x);
      if (d < bd) { bd = d; best = m; }
    }
    return { node: i, t: Math.max(0, t), mark: best, state: stateAt(lane, Math.max(0, t)) };
  }

  // counts samples how many of rows' lanes are in each state at each of
  // buckets+1 instants.
  function counts(lanes, rows, endMS, buckets) {
    const span = Math.max(endMS, 1), out = {};
    for (const i of rows) {
      const segs = lanes[i].segs;
      let j = 0;
      for (let k = 0; k <= buckets; k++) {
        const t = (k / buckets) * span;
        while (j + 1 < segs.length && segs[j + 1][0] <= t) j++;
        const st = segs[j][2];
        if (!(st in out)) out[st] = new Float32Array(buckets + 1);
        out[st][k] += 1;
      }
    }
    return out;
  }

  function drawSummary(cv, lanes, rows, endMS, gutter) {
    const { ctx, w, h } = fitCanvas(cv, 160);
    ctx.clearRect(0, 0, w, h);
    const pw = w - gutter - 8, buckets = Math.max(10, Math.min(600, Math.floor(pw / 2)));
    const c = counts(lanes, rows, endMS, buckets);
    const states = Object.keys(c).sort((a, b) => rank(a) - rank(b));
    const total = Math.max(1, rows.length), ph = h - 18;
    const base = new Float32Array(buckets + 1);
    for (const st of states) {
      ctx.fillStyle = stateColor(st);
      const arr = c[st];
      for (let k = 0; k <= buckets; k++) {
        const v = Math.max(0, arr[k]);
        if (v <= 0) continue;
        const x = gutter + (k / buckets) * pw, y0 = ph - ((base[k] + v) / total) * ph;
        ctx.fillRect(x, y0, pw / buckets + 0.6, (v / total) * ph);
        base[k] += v;
      }
    }
    ctx.fillStyle = "#6b7280"; ctx.font = "11px sans-serif"; ctx.textBaseline = "top";
    ctx.fillText(String(rows.length), 4, 0);
    ctx.fillText("0", 4, ph - 10);
    ctx.fillText("nodes", 4, 14);
    return states;
  }
  function rank(s) { const i = ORDER.indexOf(s); return i < 0 ? 999 : i; }

  function legend(el, states, onClick) {
    el.innerHTML = states.map(s => '<span class="item" data-state="' + esc(s) + '"><span class="sw" style="background:' +
      stateColor(s) + '"></span>' + esc(s || "(none)") + "</span>").join("");
    if (onClick) el.querySelectorAll(".item").forEach(x => x.addEventListener("click", () => onClick(x.dataset.state)));
  }
  function marksLegend(el) {
    const c = document.createElement("canvas");
    el.innerHTML = Object.entries(MARKS).filter(([k]) => k !== "provision").map(([k, m]) =>
      '<span><span class="sw" style="background:' + m.color + '"></span>' + esc(m.label) + "</span>").join("");
    return c;
  }
  function paintStates(root) {
    root.querySelectorAll(".state[data-state]").forEach(x => { x.style.background = stateColor(x.dataset.state); });
  }

  return { stateColor, esc, secs, buildLane, stateAt, drawAxis, drawLanes, drawSummary, hit, legend, marksLegend, paintStates, MARKS };
})();
