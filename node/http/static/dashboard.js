"use strict";
// The dashboard polls /api/dashboard; with a token in the page's fragment (#token=…) it sends it.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
const ETH = 10n ** 18n;

function wei(value) {
  if (value === null || value === undefined) return "–";
  const amount = BigInt(value);
  const whole = amount / ETH;
  const frac = (amount % ETH).toString().padStart(18, "0").slice(0, 6).replace(/0+$/, "");
  return whole + (frac ? "." + frac : "") + " ETH";
}

function short(text) {
  return text ? text.slice(0, 10) + "…" + text.slice(-6) : "–";
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(id, items, render) {
  const body = document.getElementById(id);
  body.replaceChildren(...items.map((item) => {
    const row = document.createElement("tr");
    render(row, item);
    return row;
  }));
}

function card(label, value) {
  const div = document.createElement("div");
  div.className = "card";
  const b = document.createElement("b");
  b.textContent = value;
  div.append(label, b);
  return div;
}

function show(state) {
  document.getElementById("role").textContent = state.node.provider ? "provider" : "client";
  document.getElementById("node").textContent =
    state.node.address + " · chain " + state.node.chain_id + " · block " + state.node.block_number;
  const provider = state.provider;
  document.getElementById("provider").hidden = !provider;
  if (provider) {
    const s = provider.status, e = provider.earnings;
    document.getElementById("provider-cards").replaceChildren(
      card("stake", wei(s.stake_wei)),
      card("earned, unredeemed", wei(e.unredeemed_voucher_wei)),
      card("earned, redeemed", wei(e.redeemed_voucher_wei)),
      card("withdrawable", wei(e.withdrawable_wei)),
      card("jobs running / queued", s.running + " / " + s.queued),
      card("devices", provider.devices.join(", ") || "–"),
    );
    fill("models", provider.models, (row, m) => {
      cell(row, short(m.model_id), "mono");
      cell(row, m.name);
      cell(row, m.format);
      cell(row, m.warm ? "yes" : "no");
    });
  }
  const client = state.client;
  document.getElementById("client").hidden = !client;
  if (client) {
    document.getElementById("deposit").textContent = wei(client.deposit_wei);
    fill("providers", client.providers, (row, p) => {
      cell(row, short(p.address), "mono");
      cell(row, p.devices.join(", "));
      cell(row, p.models.map((m) => short(m.model_id) + " (" + wei(m.price_per_job_wei) + ")").join(", "));
      cell(row, p.throughput_per_s ? p.throughput_per_s.toFixed(0) + " items/s" : "–");
      cell(row, p.latency_ms ? p.latency_ms.toFixed(1) + " ms" : "–");
      cell(row, (p.reputation * 100).toFixed(0) + "% (" + p.successes + "✓ " + p.failures + "✗)");
      cell(row, String(p.free_slots));
    });
  }
  fill("jobs", state.jobs, (row, j) => {
    row.id = "job-" + j.job_id;
    row.dataset.state = j.state;
    cell(row, short(j.job_id), "mono");
    cell(row, j.role);
    cell(row, j.state, "state " + j.state);
    cell(row, short(j.provider), "mono");
    cell(row, wei(j.price_wei));
    cell(row, j.error || j.text || (j.output_size !== null ? j.output_size + " bytes" : ""));
  });
}

async function refresh() {
  try {
    const response = await fetch("/api/dashboard", { headers });
    if (!response.ok) {
      const body = await response.json();
      document.getElementById("error").textContent = body.error ? body.error.message : response.statusText;
      return;
    }
    document.getElementById("error").textContent = "";
    show(await response.json());
  } catch (error) {
    document.getElementById("error").textContent = "the node does not answer: " + error.message;
  }
}

refresh();
setInterval(refresh, 500);
