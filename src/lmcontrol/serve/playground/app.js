// lmcontrol playground: base vs controlled generations streaming side by side, then their scores.
// Plain browser JavaScript (no build step); talks to the same server's OpenAI-compatible API.
"use strict";

const $ = (id) => document.getElementById(id);
let modelName = "smollm2";

async function api(path, body) {
  const resp = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error ? data.error.message : resp.statusText);
  return data;
}

function renderControls(list) {
  const box = $("controls");
  box.textContent = "";
  if (!list.data.length) {
    box.innerHTML = '<p class="muted">no controls loaded: start the server with --control NAME=SPEC ' +
      "or POST /v1/controls/load</p>";
    return;
  }
  for (const c of list.data) {
    const row = document.createElement("div");
    row.className = "control-item";
    const label = document.createElement("label");
    const box_ = document.createElement("input");
    box_.type = "checkbox";
    box_.dataset.name = c.name;
    box_.className = "control-toggle";
    label.append(box_, " " + c.name);
    const options = document.createElement("input");
    options.type = "text";
    options.placeholder = "options / weight, e.g. scale=2";
    options.dataset.options = c.name;
    const help = document.createElement("span");
    help.className = "muted";
    help.textContent = `${c.spec} — ${c.help}`;
    row.append(label, options, help);
    box.append(row);
  }
}

function chosenControls() {
  const out = [];
  for (const box of document.querySelectorAll(".control-toggle")) {
    if (!box.checked) continue;
    const opts = document.querySelector(`input[data-options="${box.dataset.name}"]`).value.trim();
    out.push("@" + box.dataset.name + (opts ? "," + opts : ""));
  }
  const extra = $("extra-spec").value.trim();
  if (extra) out.push(extra);
  return out;
}

// POST a streaming request and append each SSE delta to `target`; resolves to the full text.
async function streamInto(target, controls) {
  const chat = $("chat").checked;
  const prompt = $("prompt").value;
  const body = {
    model: modelName, stream: true, controls,
    max_tokens: Number($("max-tokens").value), temperature: Number($("temperature").value),
    seed: Number($("seed").value),
  };
  if (chat) body.messages = [{role: "user", content: prompt}]; else body.prompt = prompt;
  const resp = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  if (!resp.ok) {
    const data = await resp.json();
    throw new Error(data.error ? data.error.message : resp.statusText);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return text;
        const chunk = JSON.parse(payload);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          const delta = chat ? (choice.delta && choice.delta.content) : choice.text;
          if (delta) {
            text += delta;
            target.textContent = text;
          }
        }
      }
    }
  }
  return text;
}

function renderScores(target, scores) {
  target.textContent = "";
  for (const [name, value] of Object.entries(scores)) {
    const badge = document.createElement("span");
    badge.className = "score";
    badge.dataset.metric = name;
    badge.textContent = `${name} ${value.toFixed(3)}`;
    target.append(badge);
  }
}

async function generate() {
  const button = $("generate"), status = $("status");
  const controls = chosenControls();
  button.disabled = true;
  status.className = "muted";
  status.textContent = "generating…";
  for (const id of ["base-output", "controlled-output", "base-scores", "controlled-scores"]) $(id).textContent = "";
  $("controlled-label").textContent = controls.length ? "(" + controls.join(" + ") + ")" : "(no control chosen)";
  try {
    const [base, controlled] = await Promise.all([
      streamInto($("base-output"), []), streamInto($("controlled-output"), controls),
    ]);
    status.textContent = "scoring…";
    const scored = await api("/v1/score", {prompt: $("prompt").value, texts: [base, controlled]});
    renderScores($("base-scores"), scored.data[0]);
    renderScores($("controlled-scores"), scored.data[1]);
    status.textContent = "done";
  } catch (err) {
    status.className = "error";
    status.textContent = "error: " + err.message;
  } finally {
    button.disabled = false;
  }
}

async function init() {
  try {
    const health = await api("/healthz");
    modelName = health.model;
    $("model").textContent = `${health.model} (${health.root})`;
    renderControls(await api("/v1/controls"));
  } catch (err) {
    $("model").textContent = "server unreachable: " + err.message;
  }
  $("generate").addEventListener("click", generate);
  document.body.dataset.ready = "1";
}

init();
