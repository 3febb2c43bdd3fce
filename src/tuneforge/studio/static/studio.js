// tuneforge studio: the little JavaScript the pages need (no framework, no build step).
"use strict";

async function post(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json", "Accept": "application/json"},
                              body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

// ---- live run: poll metrics.jsonl through /api/runs/NAME/progress, draw the curves as SVG
function drawCurve(svg, loss, val) {
  const W = 640, H = 240, P = 36, all = loss.concat(val);
  if (!all.length) return;
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const sx = x => P + (x - x0) / (x1 - x0) * (W - 2 * P), sy = y => H - P - (y - y0) / (y1 - y0) * (H - 2 * P);
  const line = (pts, colour) => pts.length ? `<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${
    pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ")}"/>` : "";
  const dots = val.map(p => `<circle cx="${sx(p[0])}" cy="${sy(p[1])}" r="3" fill="#d1242f"/>`).join("");
  svg.innerHTML = `<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#999"/>` +
    `<line x1="${P}" y1="${P}" x2="${P}" y2="${H - P}" stroke="#999"/>` +
    `<text x="${P}" y="${P - 6}" font-size="11">${y1.toFixed(3)}</text><text x="${P}" y="${H - 8}" font-size="11">${y0.toFixed(3)}</text>` +
    `<text x="${W - P}" y="${H - 8}" font-size="11" text-anchor="end">step ${x1}</text>` +
    line(loss, "#1f6feb") + line(val, "#d1242f") + dots;
  svg.dataset.points = String(loss.length);
}

function followRun(box) {
  const name = box.dataset.run, svg = document.getElementById("curve");
  let lines = 0, loss = [], val = [];
  const fmt = s => s == null ? "" : s >= 90 ? `ETA ${(s / 60).toFixed(1)} min` : `ETA ${Math.round(s)} s`;
  async function tick() {
    try {
      const r = await fetch(`/api/runs/${encodeURIComponent(name)}/progress?after=${lines}`, {headers: {Accept: "application/json"}});
      const d = await r.json();
      if (d.reset) { loss = []; val = []; }
      lines = d.lines; loss = loss.concat(d.loss); val = val.concat(d.validation);
      drawCurve(svg, loss, val);
      document.getElementById("points").textContent = loss.length;
      document.getElementById("state").textContent = d.state;
      if (d.job) { const js = document.getElementById("job-state"); if (js) js.textContent = d.job.state; }
      const bar = document.getElementById("progress");
      if (d.total) { bar.max = d.total; bar.value = d.step; }
      document.getElementById("progress-text").textContent = d.total ? `step ${d.step} of ${d.total}` : `step ${d.step}`;
      document.getElementById("eta").textContent = d.state === "running" ? fmt(d.eta_s) : "";
    } catch (e) { /* the studio restarting: try again */ }
    setTimeout(tick, 1000);
  }
  tick();
}

// ---- recipe form: every change is validated on the server with the CLI's messages
function recipeForm(form) {
  const yaml = document.getElementById("yaml"), out = document.getElementById("validation");
  let timer = null;
  const sets = () => [...form.elements].filter(e => e.name && e.value !== "").map(e => `${e.name}=${e.value}`);
  async function check(fromForm) {
    try {
      const d = await post("/api/recipe/validate", {yaml: yaml.value, set: fromForm ? sets() : []});
      if (fromForm) { yaml.value = d.yaml; [...form.elements].forEach(e => { if (e.name) e.value = ""; }); }
      out.className = d.ok ? "ok" : "error";
      out.textContent = d.ok ? "valid: ready to train" : d.error;
    } catch (e) { out.className = "error"; out.textContent = e.message; }
  }
  const later = fromForm => { clearTimeout(timer); timer = setTimeout(() => check(fromForm), 300); };
  form.addEventListener("change", () => later(true));
  yaml.addEventListener("input", () => later(false));
  document.getElementById("dry-run").addEventListener("click", async () => {
    const pre = document.getElementById("dry-output");
    pre.textContent = "running the preflight...";
    try { pre.textContent = (await post("/api/recipe/dry-run", {yaml: yaml.value})).output; }
    catch (e) { pre.textContent = e.message; }
  });
  document.getElementById("train").addEventListener("click", async () => {
    try { window.location = (await post("/api/recipe/train", {yaml: yaml.value})).url; }
    catch (e) { out.className = "error"; out.textContent = e.message; }
  });
  check(false);
}

// ---- data upload: the raw file as the body, so the server can cap its size while it streams
function uploader(button) {
  button.addEventListener("click", async () => {
    const file = document.getElementById("upload-file").files[0], out = document.getElementById("upload-result");
    if (!file) { out.textContent = "pick a file first"; return; }
    const r = await fetch(`/api/data/upload?name=${encodeURIComponent(file.name)}`, {method: "POST", body: file,
                                                                                      headers: {Accept: "application/json"}});
    const d = await r.json();
    if (!r.ok) { out.className = "error"; out.textContent = d.error; return; }
    window.location = `/data?file=${encodeURIComponent(d.file)}`;
  });
}

function playground(form) {
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const base = document.getElementById("base-answer"), tuned = document.getElementById("tuned-answer");
    base.textContent = tuned.textContent = "...";
    try {
      const d = await post("/api/playground", {run: form.run.value, text: form.text.value});
      const show = v => typeof v === "string" ? v : JSON.stringify(v, null, 1);
      base.textContent = show(d.base); tuned.textContent = show(d.tuned);
    } catch (e) { base.textContent = tuned.textContent = e.message; }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const on = (id, f) => { const el = document.getElementById(id); if (el) f(el); };
  on("live", followRun); on("recipe-form", recipeForm); on("upload", uploader); on("play", playground);
});
