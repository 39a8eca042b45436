"""The planner as one self-contained HTML page: sliders, live numbers and a
plot of the task latency distribution. Inline CSS and JavaScript, no network.

The page's JavaScript implements the formulas of
:mod:`planner.formulas` operation for operation. Inputs can be set
from the URL fragment (``plan.html#n_calls=10&cache=0``), which moves the
sliders and fires their ``input`` events, the path a user's drag takes; the
headless-Chromium test uses it. Every output element carries its full-precision
value in ``data-value``.
"""

from __future__ import annotations

import html
import json
from typing import Any

from planner.formulas import PlanInputs

# (field, label, min, max, step)
SLIDERS: list[tuple[str, str, float, float, float]] = [
    ("n_calls", "model calls per task", 1, 60, 1),
    ("call_median_s", "call median (generation), s", 0.05, 10, 0.05),
    ("call_p99_s", "call p99 (generation), s", 0.05, 30, 0.05),
    ("tool_s", "tool latency, s", 0, 30, 0.1),
    ("prefill_tok_s", "prefill rate, tokens/s", 500, 50_000, 100),
    ("history_tokens", "history at the last call, tokens", 1_000, 200_000, 1_000),
    ("new_tokens", "new tokens per call", 0, 5_000, 10),
    ("kv_room_gb", "KV room per replica, GB", 1, 1_000, 1),
    ("kv_bytes_per_token", "KV bytes per token", 1_024, 2_000_000, 1_024),
    ("slo_s", "SLO (task p95), s", 1, 600, 1),
    ("tasks_per_hour", "target load, tasks/hour (0: no sizing)", 0, 500_000, 100),
]

OUTPUTS: list[tuple[str, str]] = [
    ("task_median_s", "task median, s"),
    ("task_p95_s", "task p95 (formula), s"),
    ("p_hit_p99", "P(task hits a p99 call)"),
    ("verdict", "verdict"),
    ("prefill_cold_s", "cold prefill of the history, s"),
    ("prefill_warm_s", "warm prefill of new tokens, s"),
    ("tasks_per_replica", "tasks resident per replica"),
    ("kv_gb_per_task", "KV per task, GB"),
    ("tasks_per_hour_per_replica", "tasks/hour per replica (KV-bound)"),
    ("replicas_needed", "replicas for the target load"),
]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.3em; } .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 2em; }
label { display: block; margin-top: .5em; font-size: .9em; }
input[type=range] { width: 70%; vertical-align: middle; }
.val { display: inline-block; min-width: 6em; text-align: right;
  font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; } td { padding: .25em .6em; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meets { color: #1a7f37; font-weight: bold; } .misses { color: #c62828; font-weight: bold; }
.note { font-size: .8em; color: #555; } svg { background: #fafafa; border: 1px solid #ddd; }
"""

_JS = r"""
const $ = (id) => document.getElementById(id);
function readInputs() {
  const p = {};
  for (const f of FIELDS) p[f] = parseFloat($(f).value);
  p.cache = $('cache').checked;
  return p;
}
// The published model: identical, operation for operation, to formulas.py.
function plan(p) {
  const n = p.n_calls;
  const extra = p.cache ? 0 : p.history_tokens * (n + 1) / (2 * n) / p.prefill_tok_s;
  const callMedian = p.call_median_s + extra;
  const callP99 = p.call_p99_s + extra;
  const taskMedian = n * (callMedian + p.tool_s);
  const pHit = 1.0 - Math.pow(0.99, n);
  const taskP95 = taskMedian + pHit * (callP99 - callMedian);
  const kvPerTask = p.kv_bytes_per_token * p.history_tokens;
  const tpr = p.kv_room_gb * 1e9 / kvPerTask;
  const out = {
    task_median_s: taskMedian, task_p95_s: taskP95, p_hit_p99: pHit,
    verdict: taskP95 <= p.slo_s ? 'meets SLO' : 'misses SLO',
    prefill_cold_s: p.history_tokens / p.prefill_tok_s,
    prefill_warm_s: p.new_tokens / p.prefill_tok_s,
    tasks_per_replica: tpr, call_median_s: callMedian, call_p99_s: callP99,
    kv_gb_per_task: kvPerTask / 1e9,
    tasks_per_hour_per_replica: taskMedian > 0 ? tpr * 3600.0 / taskMedian : Infinity,
    replicas_needed: null,
  };
  if (p.tasks_per_hour > 0) {
    const concurrent = p.tasks_per_hour * taskMedian / 3600.0;
    out.replicas_needed = Math.ceil(concurrent / tpr);
  }
  return out;
}
function fmt(v) {
  if (v === null) return '-';
  if (typeof v === 'string') return v;
  if (!isFinite(v)) return 'inf';
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  if (Math.abs(v) >= 1000) return v.toLocaleString('en-US', {maximumFractionDigits: 0});
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(3);
}
// Seeded sampling of the same model: lognormal calls (median, p99), fixed tools.
function mulberry32(a) {
  return function() {
    a |= 0; a = a + 0x6D2B79F5 | 0; let t = Math.imul(a ^ a >>> 15, 1 | a);
    t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t; return ((t ^ t >>> 14) >>> 0) / 4294967296;
  };
}
function sampleTasks(p, r, count) {
  const rnd = mulberry32(12345);
  const z99 = 2.3263478740408408;
  const sigma = p.call_p99_s > p.call_median_s && p.call_median_s > 0
    ? Math.log(p.call_p99_s / p.call_median_s) / z99 : 0;
  const n = p.n_calls, xs = [];
  for (let i = 0; i < count; i++) {
    let t = 0;
    for (let k = 1; k <= n; k++) {
      const u1 = Math.max(rnd(), 1e-12), u2 = rnd();
      const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
      const reprefill = p.cache ? 0 : p.history_tokens * k / n / p.prefill_tok_s;
      t += p.call_median_s * Math.exp(sigma * z) + reprefill + p.tool_s;
    }
    xs.push(t);
  }
  xs.sort((a, b) => a - b);
  return xs;
}
function drawHistogram(xs, r, slo) {
  const svg = $('hist'), W = 480, H = 200, pad = 30;
  const lo = Math.min(xs[0], slo) * 0.98, hi = Math.max(xs[xs.length - 1], slo) * 1.02;
  const bins = 40, counts = new Array(bins).fill(0);
  for (const x of xs) counts[Math.min(bins - 1, Math.floor((x - lo) / (hi - lo) * bins))]++;
  const maxC = Math.max(...counts);
  const sx = (x) => pad + (x - lo) / (hi - lo) * (W - 2 * pad);
  let s = '';
  counts.forEach((c, i) => {
    const x0 = pad + i / bins * (W - 2 * pad), w = (W - 2 * pad) / bins - 1;
    const h = c / maxC * (H - 2 * pad);
    s += `<rect x="${x0}" y="${H - pad - h}" width="${w}" height="${h}" fill="#4e79a7"/>`;
  });
  const line = (x, color, label) => {
    s += `<line x1="${sx(x)}" x2="${sx(x)}" y1="${pad / 2}" y2="${H - pad}"`
      + ` stroke="${color}" stroke-width="2"/>`;
    s += `<text x="${sx(x) + 3}" y="${pad / 2 + 10}" font-size="10"`
      + ` fill="${color}">${label}</text>`;
  };
  line(slo, '#c62828', 'SLO');
  line(r.task_p95_s, '#f28e2b', 'p95 (formula)');
  s += `<text x="${pad}" y="${H - 8}" font-size="10">${fmt(lo)} s</text>`;
  s += `<text x="${W - pad - 40}" y="${H - 8}" font-size="10">${fmt(hi)} s</text>`;
  svg.innerHTML = s;
  const p95 = xs[Math.floor(0.95 * (xs.length - 1))];
  $('sampled_p95_s').textContent = fmt(p95);
  $('sampled_p95_s').dataset.value = String(p95);
}
function update() {
  const p = readInputs();
  for (const f of FIELDS) $(f + '_val').textContent = fmt(p[f]);
  const r = plan(p);
  for (const k of OUTPUT_KEYS) {
    const el = $(k);
    el.textContent = fmt(r[k]);
    el.dataset.value = r[k] === null ? '' : String(r[k]);
  }
  $('verdict').className = r.verdict === 'meets SLO' ? 'meets' : 'misses';
  drawHistogram(sampleTasks(p, r, 2000), r, p.slo_s);
}
function applyShape() {
  const bytes = {fp32: 4, bf16: 2, fp16: 2, fp8: 1, int8: 1}[$('dtype').value];
  const v = 2 * parseInt($('layers').value) * parseInt($('kv_heads').value)
    * parseInt($('head_dim').value) * bytes;
  setInput('kv_bytes_per_token', v);
}
function setInput(name, value) {
  const el = $(name);
  if (!el) return;
  if (el.type === 'checkbox') el.checked = !(value === '0' || value === 'false' || value === false);
  else {
    if (el.type === 'range') {  // widen the slider so any valid value can be set
      if (parseFloat(value) > parseFloat(el.max)) el.max = value;
      if (parseFloat(value) < parseFloat(el.min)) el.min = value;
    }
    el.value = value;
  }
  el.dispatchEvent(new Event('input', {bubbles: true}));
}
function applyHash() {
  const h = location.hash.replace(/^#/, '');
  if (!h) return;
  for (const part of h.split('&')) {
    const [k, v] = part.split('=').map(decodeURIComponent);
    if (k) setInput(k, v);
  }
}
document.addEventListener('input', (e) => {
  if (['layers', 'kv_heads', 'head_dim', 'dtype'].includes(e.target.id)) applyShape();
  else update();
});
window.addEventListener('hashchange', applyHash);
update();
applyHash();
document.body.dataset.ready = '1';
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.3f}"


def render(p: PlanInputs, result: dict[str, Any], mc: dict[str, Any] | None) -> str:
    values = {f: getattr(p, f) for f, *_ in SLIDERS}
    sliders = []
    for f, label, lo, hi, step in SLIDERS:
        v = values[f]
        lo, hi = min(lo, v), max(hi, v)
        sliders.append(
            f'<label for="{f}">{html.escape(label)}</label>'
            f'<input type="range" id="{f}" min="{lo}" max="{hi}" step="any" value="{v}" '
            f'data-step="{step}">'
            f'<span class="val" id="{f}_val"></span>'
        )
    checked = " checked" if p.cache else ""
    sliders.append(
        f'<label><input type="checkbox" id="cache"{checked}> prefix cache on '
        "(history stays resident between calls)</label>"
    )
    shape = (
        '<p class="note">KV bytes per token from a model shape: '
        '<input id="layers" type="number" value="80" min="1" style="width:4em"> layers x '
        '<input id="kv_heads" type="number" value="8" min="1" style="width:3em"> KV heads x '
        '<input id="head_dim" type="number" value="128" min="1" style="width:4em"> head dim x '
        '<select id="dtype"><option>bf16</option><option>fp16</option><option>fp8</option>'
        "<option>fp32</option><option>int8</option></select> x 2 (K and V)</p>"
    )
    rows = "".join(
        f'<tr><td>{html.escape(label)}</td><td class="num"><span id="{k}" '
        f'data-value="{html.escape(str(result.get(k, "")))}">{_fmt(result.get(k))}</span></td></tr>'
        for k, label in OUTPUTS
    )
    if mc is not None and mc.get("task_p95_s") is not None:
        mc_note = (
            f"simulator Monte-Carlo p95 at the inputs this page was written with: "
            f'<b id="mc_p95_s" data-value="{mc["task_p95_s"]}">{mc["task_p95_s"]:.1f} s</b> '
            f"({mc['tasks']} simulated tasks; formula: {result['task_p95_s']:.1f} s)"
        )
    else:
        mc_note = "simulator Monte-Carlo: not run (--no-mc)"
    fields = json.dumps([f for f, *_ in SLIDERS])
    keys = json.dumps([k for k, _ in OUTPUTS])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Agent fleet planner: task latency and the tail</title>
<style>{_CSS}</style></head>
<body>
<h1>Agent fleet planner: task latency and the tail</h1>
<p class="note">Model: per-call latency = generation (+ with the prefix cache off, re-prefill of
the growing history / prefill rate); task median = n x (call median + tool);
p95 = median + (1 - 0.99^n) x (call p99 - call median); tasks per replica = KV room /
(KV bytes per token x history). Set inputs from the URL too: <code>#n_calls=10&amp;cache=0</code>.
</p>
<div class="grid"><div>{"".join(sliders)}{shape}</div>
<div><table>{rows}
<tr><td>task p95 (sampled from the model)</td><td class="num"><span id="sampled_p95_s"
data-value=""></span></td></tr></table>
<p class="note">{mc_note}</p>
<svg id="hist" width="480" height="200" role="img"
aria-label="task latency distribution"></svg>
<p class="note">Task latency distribution: 2,000 tasks sampled from the model (lognormal calls
with the given median and p99, fixed tools).</p></div></div>
<script>const FIELDS = {fields}; const OUTPUT_KEYS = {keys};{_JS}</script>
</body></html>
"""
