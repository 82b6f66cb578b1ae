// The membudget page: every change asks POST /api/plan and redraws. No build step, no CDN.
"use strict";

const GIB = 2 ** 30;
const CACHE_TYPES = ["f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"];
const COLOURS = ["#4c72b0", "#dd8452", "#937860", "#55a868", "#8172b3", "#c44e52", "#64b5cd"];
const LABELS = { model: "weights", kv: "KV cache", kv_swa: "KV cache, SWA", recurrent: "recurrent state",
                 output: "output (logits)", compute: "compute buffer" };
const $ = (id) => document.getElementById(id);
let pending = null;
let serial = 0;

function gib(n) { return (n / GIB).toFixed(2); }

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => { const o = new Option(v, v); o.selected = v === chosen; return o; }));
}

function body() {
  const kind = $("source-kind").value;
  const gpus = $("gpus").value.split(",").map((s) => s.trim()).filter(Boolean);
  return {
    model: kind === "model" ? $("model").value : kind === "remote" ? $("remote").value.trim() : null,
    path: kind === "path" ? $("path").value : null,
    engine: $("engine").value,
    ctx: Number($("ctx").value) || 0,
    parallel: Math.max(1, Number($("parallel").value) || 1),
    cache_type_k: $("cache-type-k").value,
    cache_type_v: $("cache-type-v").value,
    flash_attn: $("flash-attn").value,
    quant: $("quant").value || null,
    memory: $("memory").value.trim() || null,
    gpus,
  };
}

// Parts of the plan as [device, label, resident bytes], whatever the engine.
function parts(plan) {
  if (plan.engine === "llama.cpp") {
    const out = [];
    for (const dev of plan.devices) {
      for (const b of dev.buffers) {
        // the mapped weights and their CPU_REPACK copies are two buffers: name them apart
        const label = b.kind === "model" && /REPACK/.test(b.detail || "") ? "weights, repacked copy (CPU_REPACK)"
          : b.kind === "model" && /mapped/.test(b.detail || "") ? "weights, memory-mapped" : LABELS[b.kind] || b.kind;
        out.push([dev.device, label, b.bytes - b.reclaimable_bytes]);
      }
    }
    return out;
  }
  if (plan.engine === "vllm") {
    const m = plan.memory;
    return [["GPU", "weights", m.weights_bytes], ["GPU", "activations", m.activation_bytes],
            ["GPU", "non-torch", m.non_torch_bytes], ["GPU", "CUDA graphs", m.cuda_graph_bytes],
            ["GPU", "KV cache", m.kv_cache_bytes]];
  }
  if (plan.engine === "sglang") {
    const m = plan.memory;
    return [["GPU", "CUDA context", m.context_bytes], ["GPU", "reserved (activations, graphs)", m.reserved_bytes],
            ["GPU", "weights", m.weights_bytes], ["GPU", "KV cache", m.kv_cache_bytes]];
  }
  const b = plan.budget;
  return [["memory", "weights", b.model_weight_bytes], ["memory", "runtime overhead", b.runtime_overhead],
          ["memory", "KV cache budget", b.kv_cache_budget]];
}

function budgetBytes(plan) {
  if (plan.engine === "reference") return plan.budget.total_system_bytes;
  return plan.budget.memory_bytes;
}

function drawChart(rows, budget) {
  const width = 640, barH = 34, top = 8;
  const total = rows.reduce((a, r) => a + r[2], 0);
  const scale = Math.max(total, budget || 0, 1);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${top + barH + 30 + 18 * Math.ceil(rows.length / 2)}`);
  svg.setAttribute("width", "100%");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "memory breakdown against the budget");
  let x = 0;
  rows.forEach((r, i) => {
    const w = (r[2] / scale) * width;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", x); rect.setAttribute("y", top); rect.setAttribute("width", Math.max(w, 0));
    rect.setAttribute("height", barH); rect.setAttribute("fill", COLOURS[i % COLOURS.length]);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${r[0]} ${r[1]}: ${gib(r[2])} GiB`;
    rect.appendChild(title);
    svg.appendChild(rect);
    x += w;
    // two legend entries a row, 320 px each: the longest label ("weights, repacked copy
    // (CPU_REPACK) (CPU) 99.99 GiB") fits at 11 px
    const lx = (i % 2) * 320, ly = top + barH + 22 + 18 * Math.floor(i / 2);
    const sw = document.createElementNS(ns, "rect");
    sw.setAttribute("x", lx); sw.setAttribute("y", ly - 10); sw.setAttribute("width", 10); sw.setAttribute("height", 10);
    sw.setAttribute("fill", COLOURS[i % COLOURS.length]);
    svg.appendChild(sw);
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", lx + 14); t.setAttribute("y", ly); t.setAttribute("font-size", "11");
    t.textContent = `${r[1]} (${r[0]}) ${gib(r[2])} GiB`;
    svg.appendChild(t);
  });
  if (budget) {
    const bx = (budget / scale) * width;
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", bx); line.setAttribute("x2", bx); line.setAttribute("y1", 0); line.setAttribute("y2", top + barH + 6);
    line.setAttribute("stroke", "black"); line.setAttribute("stroke-width", 2); line.setAttribute("stroke-dasharray", "4 2");
    line.setAttribute("id", "budget-line");
    svg.appendChild(line);
  }
  $("chart").replaceChildren(svg);
}

// The form field each membudget plan flag of a suggestion sets.
const FLAG_FIELDS = {
  "--ctx": "ctx", "-c": "ctx", "--max-model-len": "ctx", "--parallel": "parallel", "-np": "parallel",
  "--cache-type-k": "cache-type-k", "-ctk": "cache-type-k", "--cache-type-v": "cache-type-v",
  "-ctv": "cache-type-v", "--quant": "quant", "--flash-attn": "flash-attn", "-fa": "flash-attn",
  "--memory": "memory", "--gpu": "gpus",
};

function suggestionFields(args) {
  const out = [];
  for (let i = 0; i < args.length; i += 2) {
    const field = FLAG_FIELDS[args[i]];
    if (!field || i + 1 >= args.length) return null;  // a flag the page has no field for
    out.push([field, args[i + 1]]);
  }
  return out;
}

function showSuggestions(plan) {
  const list = $("suggestions");
  const items = (plan.suggestions || []).map((s) => {
    const li = document.createElement("li");
    const fields = suggestionFields(s.plan_args || []);
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Apply: ${s.change}`;
    button.title = `needs ${gib(s.needed_bytes)} GiB`;
    if (fields === null) {
      button.disabled = true;
      button.title = `${s.plan_args.join(" ")}: not a setting on this page`;
    } else {
      button.addEventListener("click", () => {
        for (const [field, value] of fields) $(field).value = value;
        schedule();
      });
    }
    li.append(button, ` (needs ${gib(s.needed_bytes)} GiB)`);
    return li;
  });
  list.replaceChildren(...items);
  $("suggestions-block").hidden = items.length === 0;
}

function show(plan) {
  showSuggestions(plan);
  const rows = parts(plan).filter((r) => r[2] > 0);
  const budget = budgetBytes(plan);
  const total = rows.reduce((a, r) => a + r[2], 0);
  const fits = plan.engine === "reference" ? plan.fits !== false : plan.budget.fits;
  const verdict = $("verdict");
  // The one "needs" figure: what the verdict compares with the budget (memory.needed_bytes).
  const needed = plan.memory && plan.memory.needed_bytes !== undefined ? plan.memory.needed_bytes : total;
  const perDevice = plan.engine === "llama.cpp" && plan.devices.length > 1
    ? ` (${plan.devices.map((d) => `${d.device} ${gib(d.needed_bytes)} of ${gib(d.budget_bytes)} GiB`).join(", ")})`
    : ` of ${gib(budget)} GiB`;
  verdict.textContent = `${fits ? "Fits" : "Does not fit"}: needs ${gib(needed)} GiB${perDevice}`;
  verdict.className = `verdict ${fits ? "fits" : "nofit"}`;
  verdict.dataset.fits = String(fits);
  drawChart(rows, budget);
  $("breakdown").tBodies[0].replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.part = r[1];
    for (const [text, cls] of [[r[0], ""], [r[1], ""], [gib(r[2]), "num"], [r[2].toLocaleString("en"), "num"]]) {
      const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
    }
    return tr;
  }));
  const maxCtx = plan.engine === "reference" ? plan.max_context : plan.budget.max_context;
  $("max-context").textContent = maxCtx ? `${maxCtx.toLocaleString("en")} tokens` : "none";
  $("max-parallel").textContent = plan.engine === "reference" ? "–" : String(plan.budget.max_parallel);
  let command = "";
  if (plan.engine === "llama.cpp") command = plan.commands["llama.cpp"].join(" ");
  else if (plan.engine === "vllm") command = plan.commands.vllm.join(" ");
  else command = plan.summary;
  $("command").textContent = command;
}

async function update() {
  const mine = ++serial;
  $("error").hidden = true;
  let response;
  try {
    response = await fetch("/api/plan", { method: "POST", headers: { "content-type": "application/json" },
                                          body: JSON.stringify(body()) });
  } catch (e) {
    if (mine === serial) { $("error").textContent = `The server did not answer: ${e}`; $("error").hidden = false; }
    return;
  }
  const data = await response.json();
  if (mine !== serial) return;  // a newer request is on its way
  if (!response.ok) {
    const msg = data.error || response.statusText;
    $("error").textContent = msg;
    $("error").hidden = false;
    $("verdict").textContent = "…";
    $("verdict").className = "verdict";
    delete $("verdict").dataset.fits;
    return;
  }
  show(data);
  updateCurve(body());
  document.body.dataset.ready = String(serial);
}

const SVG = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// Memory against context (POST /api/curve): each device's total, its budget, the largest
// context that fits.
function drawCurve(curve) {
  const box = $("curve");
  const W = 640, H = 240, L = 56, R = 12, T = 14, B = 34;
  const xs = curve.contexts;
  const devices = curve.devices.filter((d) => d.parts.length);
  if (!xs.length || !devices.length) { box.replaceChildren(); return; }
  const totals = devices.map((d) => xs.map((_, i) => d.parts.reduce((a, p) => a + p.bytes[i], 0)));
  const top = Math.max(...totals.flat(), ...devices.map((d) => d.budget_bytes)) * 1.05;
  const x = (c) => L + (W - L - R) * Math.log2(c / xs[0]) / Math.max(1e-9, Math.log2(xs[xs.length - 1] / xs[0]));
  const y = (b) => T + (H - T - B) * (1 - b / top);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "memory against context" });
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }));
  svg.append(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
  svg.append(svgEl("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11 }, "context (tokens, log scale)"));
  svg.append(svgEl("text", { x: 4, y: T + 8, "font-size": 11 }, `${gib(top)} GiB`));
  const colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"];
  devices.forEach((d, k) => {
    const pts = xs.map((c, i) => `${x(c).toFixed(1)},${y(totals[k][i]).toFixed(1)}`).join(" ");
    svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: colours[k % 4], "stroke-width": 2, class: "curve-line" }));
    const by = y(d.budget_bytes);
    svg.append(svgEl("line", { x1: L, y1: by, x2: W - R, y2: by, stroke: colours[k % 4], "stroke-dasharray": "5 3", id: k === 0 ? "curve-budget" : undefined }));
    svg.append(svgEl("text", { x: W - R - 4, y: by - 4, "text-anchor": "end", "font-size": 11 }, `${d.device} budget ${gib(d.budget_bytes)} GiB`));
  });
  if (curve.max_context > 0) {
    const mx = x(Math.max(xs[0], Math.min(curve.max_context, xs[xs.length - 1])));
    svg.append(svgEl("line", { x1: mx, y1: T, x2: mx, y2: H - B, stroke: "#222", "stroke-dasharray": "2 2", id: "curve-max" }));
    const right = mx > W * 0.65;  // near the right edge the label goes on the line's left
    svg.append(svgEl("text", { x: right ? mx - 4 : mx + 4, y: T + 22, "text-anchor": right ? "end" : "start", "font-size": 11 },
                     `largest context ${curve.max_context.toLocaleString("en")}${curve.max_context >= xs[xs.length - 1] ? " (the model's trained context)" : ""}`));
  }
  box.replaceChildren(svg);
}

let curveSerial = 0;

async function updateCurve(sent) {
  const mine = ++curveSerial;  // only the newest request draws: answers may come back out of order
  if (!["llama.cpp", "llama-server", "vllm"].includes(sent.engine)) { $("curve").replaceChildren(); return; }
  try {
    const r = await fetch("/api/curve", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(sent) });
    const data = r.ok ? await r.json() : null;
    if (mine !== curveSerial) return;
    if (data) drawCurve(data); else $("curve").replaceChildren();
  } catch { if (mine === curveSerial) $("curve").replaceChildren(); }
}

function schedule() {
  clearTimeout(pending);
  pending = setTimeout(update, 120);
}

let fitRows = [];
let fitEngine = "llama-server";
let fitSort = { key: "n_params", descending: true };
// the engines membudget fit sweeps for; the others (Ollama, the reference) sweep llama-server
const FIT_ENGINES = ["llama.cpp", "llama-server", "vllm", "sglang"];

function renderFits() {
  const { key, descending } = fitSort;
  const rows = [...fitRows].sort((a, b) => {
    const x = key === "quality" ? a.quality_rank : a[key];
    const y = key === "quality" ? b.quality_rank : b[key];
    const order = typeof x === "string" ? String(x).localeCompare(String(y)) : Number(x) - Number(y);
    return descending ? -order : order;
  });
  $("fit-table").querySelector("tbody").replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.model = r.model;
    const link = document.createElement("a");
    link.href = "#settings";
    link.textContent = r.model;
    link.addEventListener("click", (e) => {
      e.preventDefault();
      $("source-kind").value = "model";
      $("source-kind").dispatchEvent(new Event("change"));
      $("engine").value = fitEngine;  // the row's plan is the swept engine's
      $("model").value = r.model;
      $("quant").value = r.quant || "";
      $("ctx").value = String(r.max_context);
      schedule();
      $("settings").scrollIntoView();
    });
    const cells = [
      link,
      `${(r.n_params / 1e9).toFixed(1)}B${r.moe ? " MoE" : ""}`,
      r.preset,
      `${r.max_context.toLocaleString("en")}${r.max_context_limit === "n_ctx_train" ? " (trained)" : ""}`,
      r.max_parallel.toLocaleString("en"),
      { gpu: "GPU only", offload: "GPU + CPU", cpu: "CPU" }[r.placement],
      gib(r.headroom_bytes),
    ];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (i === 1 || i === 3 || i === 4 || i === 6) td.className = "num";
      if (typeof c === "string") td.textContent = c; else td.append(c);
      tr.append(td);
    });
    return tr;
  }));
  $("fit-table").hidden = false;
}

async function runFit() {
  const params = new URLSearchParams();
  const memory = $("memory").value.trim();
  if (memory) params.set("memory", memory);
  const gpus = $("gpus").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (gpus.length) params.set("gpus", gpus.join(","));
  const engine = $("engine").value;
  params.set("engine", FIT_ENGINES.includes(engine) ? engine : "llama-server");
  $("fit-status").textContent = "sweeping the catalogue…";
  $("fit-run").disabled = true;
  try {
    const r = await fetch(`/api/fit?${params}`);
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    const order = ["F16", "BF16", "F32", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"];
    fitRows = data.rows.map((row) => ({ ...row, quality_rank: -(order.indexOf(row.preset) + 1 || 99) }));
    fitEngine = data.engine;
    $("fit-status").textContent = `${data.rows.length} models fit ${data.min_ctx.toLocaleString("en")} tokens on ${data.hardware} with ${data.engine}; ${data.skipped.length} do not.`;
    renderFits();
  } catch (err) {
    $("fit-status").textContent = `Could not sweep: ${err.message}`;
  } finally {
    $("fit-run").disabled = false;
  }
}

async function init() {
  fillSelect($("cache-type-k"), CACHE_TYPES, "f16");
  fillSelect($("cache-type-v"), CACHE_TYPES, "f16");
  const [models, files, hw] = await Promise.all(
    ["/api/models", "/api/files", "/api/hardware"].map((u) => fetch(u).then((r) => r.json())));
  fillSelect($("model"), models.models.map((m) => m.name), models.models.some((m) => m.name === "llama-3.1-8b") ? "llama-3.1-8b" : models.models[0].name);
  $("files").replaceChildren(...files.files.map((f) => new Option(f, f)));
  const gpus = hw.gpus.map((g) => `${g.name} ${gib(g.free_bytes)} GiB free`).join(", ");
  $("hardware").textContent = `This machine: ${gib(hw.ram.available_bytes)} GiB RAM available` + (gpus ? `; ${gpus}` : "; no NVIDIA GPU");
  $("source-kind").addEventListener("change", () => {
    const kind = $("source-kind").value;
    $("path-label").hidden = kind !== "path";
    $("model-label").hidden = kind !== "model";
    $("remote-label").hidden = kind !== "remote";
  });
  // a remote name is read from the Hub: plan it when it is complete (change or Enter), not
  // at every keystroke
  $("settings").addEventListener("input", (e) => { if (e.target.id !== "remote") schedule(); });
  $("settings").addEventListener("change", schedule);
  $("settings").addEventListener("submit", (e) => { e.preventDefault(); schedule(); });
  $("fit-run").addEventListener("click", runFit);
  for (const b of document.querySelectorAll("#fit-table th button")) {
    b.addEventListener("click", () => {
      const key = b.dataset.sort;
      fitSort = { key, descending: fitSort.key === key ? !fitSort.descending : key !== "model" };
      renderFits();
    });
  }
  $("copy").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("command").textContent); $("copy").textContent = "Copied"; }
    catch { $("copy").textContent = "Select and copy"; }
  });
  await update();
}

init();
