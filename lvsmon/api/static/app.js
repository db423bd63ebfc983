// lvsmon's status page: GET status once and every few seconds (the truth: weights, figures),
// GET events as server-sent events in between (what changed, at once). No framework and no
// build step: the page must work from the files lvsmon ships, with no other origin.
//
// Built for 10,000 reals: a virtual's rows exist only while its group is open, a refresh or an
// event repaints only the cells that changed, and event bursts are coalesced into one paint.
// All text from the daemon goes in as textContent, never as markup.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const EVENTS_KEPT = 200; // rows in the recent events pane
  const OPEN_ALL_UPTO = 100; // a pool this small is shown with every group open
  const ROW_CAP = 2000; // rows built at once in one group; more on demand
  const PAINT_MS = 100; // bursts of events are painted together at most this often
  // named SSE frames reach only listeners of their name (onmessage sees unnamed ones only)
  const EVENT_TYPES = [
    "RealChanged", "FirstCheckDown", "SoftFailure", "SoftReset", "KernelOp", "WeightChanged",
    "FallbackChanged", "ConfigLoaded", "ConfigFileChanged", "ConfigRejected", "PhaseChanged",
    "SyncDaemonOp", "DrainChanged", "RampChanged", "DepoolLimited", "ArpConflict",
    "ArpConflictCleared", "RouteChanged", "AgentChanged", "RealLeaving", "CertificateExpiring",
  ];
  const COLUMNS = ["real", "state", "kernel weight", "weight", "latency", "fails", "last check"];

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  const model = {
    groups: [], // in the config's order
    byKey: new Map(), // virtual as events name it (str(ServiceKey)) -> group
    shape: "", // the virtuals and reals: a change means a reload, the groups are rebuilt
    status: null,
    rate: null, // [checks_done, ms] at the previous refresh, for checks/s
    loaded: false,
  };
  const view = { terms: [], problemsOnly: false };
  const dirty = new Set(); // groups whose reals changed since the last paint
  let pending = []; // events not yet in the pane, oldest first
  let paintTimer = null;
  let refreshTimer = null;
  let lastSeq = 0;

  // ---- identities -------------------------------------------------------------------------

  // as events name a real: "IP:PORT", "[IPv6]:PORT"
  const realId = (address, port) =>
    (address.includes(":") ? `[${address}]` : address) + ":" + port;
  const findReal = (virtual, real) => {
    const g = model.byKey.get(virtual);
    return g ? g.byReal.get(real) : undefined;
  };
  const filtering = () => view.terms.length > 0 || view.problemsOnly;
  const isProblem = (d) => d.state !== "up" || d.drained === true;

  function haystack(r) {
    if (r.hay === null) {
      const d = r.d;
      r.hay = (`${r.g.name} ${r.g.key} ${r.id} ${d.state} ${d.reason}` +
        (d.drained ? " drained" : "") + (d.kept_by_threshold ? " kept threshold" : "") +
        (d.rising ? " rising" : "") + (d.held_until ? " held" : "") +
        (d.steering && d.steering.ramp ? " ramping slow start" : "")).toLowerCase();
    }
    return r.hay;
  }

  function matches(r) {
    if (view.problemsOnly && !isProblem(r.d)) return false;
    if (!view.terms.length) return true;
    const hay = haystack(r);
    return view.terms.every((t) => hay.includes(t));
  }

  // ---- formatting -------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");
  function clock(epochS) {
    const t = new Date(epochS * 1000);
    return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return m ? `${m}m ${s % 60}s` : `${s % 60}s`;
  }
  const num = (n) => (typeof n === "number" ? n.toLocaleString("en") : "…");

  // ---- building groups --------------------------------------------------------------------

  function shapeOf(status) {
    return (status.virtuals || [])
      .map((v) => (v.key || v.name) + "=" + v.reals.map((r) => realId(r.address, r.port)).join(","))
      .join(";");
  }

  function rebuild(status) {
    const wasOpen = new Map(model.groups.map((g) => [g.key, g.open]));
    const virtuals = status.virtuals || [];
    const total = virtuals.reduce((n, v) => n + v.reals.length, 0);
    for (const g of model.groups) for (const r of g.reals) r.row = null;
    model.groups = [];
    model.byKey.clear();
    const frag = document.createDocumentFragment();
    for (const v of virtuals) {
      const key = v.key || v.name;
      const g = {
        key, name: v.name, where: `${v.file}:${v.line}`,
        reals: [], byReal: new Map(),
        open: wasOpen.has(key) ? wasOpen.get(key) : total <= OPEN_ALL_UPTO,
        filterOpen: null, // while filtering: the operator's own open/close of this group
        shown: [], cap: ROW_CAP,
      };
      for (const d of v.reals) {
        const r = { id: realId(d.address, d.port), g, d, row: null, cells: null, p: null, hay: null };
        g.reals.push(r);
        g.byReal.set(r.id, r);
      }
      frag.append(groupElement(g));
      model.groups.push(g);
      model.byKey.set(key, g);
    }
    $("groups").replaceChildren(frag);
  }

  function groupElement(g) {
    g.el = el("section", "vgroup");
    g.el.dataset.key = g.key;
    g.head = el("button", "vhead");
    g.head.type = "button";
    g.head.title = g.where;
    g.sum = el("span", "vsum");
    g.badges = el("span", "vbadges");
    g.barUp = el("span", "vbar-up");
    const bar = el("span", "vbar");
    bar.append(g.barUp);
    g.head.append(el("span", "caret"), el("span", "vname", g.name), g.sum, bar, g.badges);
    g.body = el("div", "vbody");
    g.body.hidden = true;
    const table = el("table", "reals");
    const tr = el("tr");
    COLUMNS.forEach((c, i) => tr.append(el("th", `c${i}`, c)));
    table.append(el("thead"), (g.tbody = el("tbody")));
    table.tHead.append(tr);
    g.more = el("button", "more");
    g.more.type = "button";
    g.more.hidden = true;
    g.body.append(table, g.more);
    g.el.append(g.head, g.body);
    return g.el;
  }

  // ---- painting ---------------------------------------------------------------------------

  function counts(g) {
    const c = { up: 0, down: 0, maintenance: 0, drained: 0, kept: 0 };
    for (const r of g.reals) {
      c[r.d.state] = (c[r.d.state] || 0) + 1;
      if (r.d.drained) c.drained++;
      if (r.d.kept_by_threshold) c.kept++;
    }
    return c;
  }

  function paintSummary(g, shownCount) {
    const c = counts(g);
    const n = g.reals.length;
    const text = `${c.up}/${n} up` + (filtering() ? ` · ${shownCount} match` : "");
    if (g.sum.textContent !== text) g.sum.textContent = text;
    const health = c.up === n ? "all-up" : c.up === 0 ? "none-up" : "some-down";
    const cls = `vgroup ${health}`;
    if (g.el.className !== cls) g.el.className = cls;
    g.barUp.style.width = n ? `${(100 * c.up) / n}%` : "0";
    const key = `${c.down}/${c.maintenance}/${c.drained}/${c.kept}`;
    if (g.badgeKey !== key) {
      g.badgeKey = key;
      const b = [];
      if (c.down) b.push(el("span", "badge down", `${c.down} down`));
      if (c.maintenance) b.push(el("span", "badge maintenance", `${c.maintenance} maintenance`));
      if (c.drained) b.push(el("span", "badge drained", `${c.drained} drained`));
      // down by their checks, in service all the same: the depool threshold holds them in
      if (c.kept) b.push(el("span", "badge kept", `${c.kept} kept by threshold`));
      g.badges.replaceChildren(...b);
    }
    return c;
  }

  function makeRow(r) {
    const tr = el("tr");
    tr.dataset.real = r.id;
    r.cells = COLUMNS.map((_, i) => {
      const td = el("td", `c${i}`);
      tr.append(td);
      return td;
    });
    r.cells[0].textContent = r.id;
    r.stateText = el("span", "state");
    r.drainMark = el("span", "badge drained", "drained");
    r.keptMark = el("span", "badge kept", "kept by threshold");
    r.keptMark.title = "its checks fail, but the depool threshold keeps it in service";
    r.dampMark = el("span", "badge damp");
    r.rampMark = el("span", "badge damp ramp");
    r.agentMark = el("span", "badge damp agent");
    r.agentMark.title = "what the real's agent says (agent check)";
    r.cells[1].append(r.stateText);
    r.row = tr;
    r.p = {};
  }

  function set(r, field, cell, text) {
    if (r.p[field] !== text) {
      r.p[field] = text;
      cell.textContent = text;
    }
  }

  function paintRow(r) {
    if (!r.row) return;
    const d = r.d;
    const cls = `st-${d.state}` + (d.drained ? " drained" : "") + (d.checked ? "" : " unchecked");
    if (r.p.cls !== cls) {
      r.p.cls = cls;
      r.row.className = cls;
    }
    if (r.p.state !== d.state) {
      r.p.state = d.state;
      r.stateText.textContent = d.state;
      r.stateText.className = `state ${d.state}`;
    }
    if (r.p.drained !== !!d.drained) {
      r.p.drained = !!d.drained;
      if (d.drained) r.cells[1].append(r.drainMark);
      else r.drainMark.remove();
    }
    if (r.p.kept !== !!d.kept_by_threshold) {
      r.p.kept = !!d.kept_by_threshold;
      if (r.p.kept) r.cells[1].append(r.keptMark);
      else r.keptMark.remove();
    }
    // rise and flap damping: a down real counting passes, or held down for flapping
    const damp = d.held_until ? `held until ${clock(d.held_until)}` : d.rising ? `rising ${d.rising}` : "";
    if (r.p.damp !== damp) {
      r.p.damp = damp;
      r.dampMark.textContent = damp;
      if (damp) r.cells[1].append(r.dampMark);
      else r.dampMark.remove();
    }
    // slow start: the step of the ramp and when it ends
    const st = d.steering;
    const ramp = st && st.ramp
      ? `ramping ${st.ramp}` + (st.ramp_until ? ` until ${clock(st.ramp_until)}` : "") : "";
    if (r.p.ramp !== ramp) {
      r.p.ramp = ramp;
      r.rampMark.textContent = ramp;
      r.rampMark.title = ramp ? "slow start: its weight grows to the configured one" : "";
      if (ramp) r.cells[1].append(r.rampMark);
      else r.rampMark.remove();
    }
    // the agent check: "weight 3/10 by agent" below the weight, else its word (drain, maint...)
    const agent = agentWords(d.agent);
    if (r.p.agent !== agent) {
      r.p.agent = agent;
      r.agentMark.textContent = agent;
      if (agent) r.cells[1].append(r.agentMark);
      else r.agentMark.remove();
    }
    const kw = d.kernel_weight;
    set(r, "kw", r.cells[2], kw === null || kw === undefined ? "absent" : String(kw));
    const kwCls = `c2${kw === null || kw === undefined ? " absent" : kw === 0 ? " zero" : ""}`;
    if (r.p.kwCls !== kwCls) r.cells[2].className = r.p.kwCls = kwCls;
    set(r, "w", r.cells[3], String(d.weight));
    const lat = d.latency_ms;
    set(r, "lat", r.cells[4], typeof lat === "number" ? `${lat.toFixed(lat < 10 ? 1 : 0)} ms` : "—");
    set(r, "fc", r.cells[5], d.failcount ? String(d.failcount) : "");
    set(r, "reason", r.cells[6], d.checked === false && !d.reason ? "not checked yet" : d.reason);
  }

  function agentWords(text) {
    if (typeof text !== "string" || !text) return "";
    const w = /^weight (\d+)\/(\d+)$/.exec(text);
    if (w) return w[1] === w[2] ? "" : `${text} by agent`;
    return `agent: ${text}`;
  }

  function sameRows(a, b) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  function renderGroup(g) {
    const list = filtering() ? g.reals.filter(matches) : g.reals;
    paintSummary(g, list.length);
    const visible = list.length > 0 || !filtering();
    g.el.hidden = !visible;
    let open = g.open;
    if (filtering()) open = g.filterOpen === null ? true : g.filterOpen;
    open = open && visible;
    g.head.setAttribute("aria-expanded", String(open));
    g.body.hidden = !open;
    const rows = open ? list.slice(0, g.cap) : [];
    if (!sameRows(g.shown, rows)) {
      const keep = new Set(rows);
      for (const r of g.shown) if (!keep.has(r)) r.row = null; // closed rows are let go
      const frag = document.createDocumentFragment();
      for (const r of rows) {
        if (!r.row) makeRow(r);
        paintRow(r);
        frag.append(r.row);
      }
      g.tbody.replaceChildren(frag);
      g.shown = rows;
    } else {
      for (const r of rows) paintRow(r);
    }
    const hidden = open ? list.length - rows.length : 0;
    g.more.hidden = hidden <= 0;
    if (hidden > 0) g.more.textContent = `show ${Math.min(hidden, ROW_CAP)} more of ${hidden}`;
    return list.length;
  }

  function renderAll() {
    let matched = 0;
    for (const g of model.groups) matched += renderGroup(g);
    paintTotals();
    const total = model.groups.reduce((n, g) => n + g.reals.length, 0);
    $("match-count").textContent = filtering() ? `${num(matched)} of ${num(total)} reals` : "";
  }

  function paintTotals() {
    let up = 0, total = 0, down = 0;
    for (const g of model.groups) {
      for (const r of g.reals) {
        total++;
        if (r.d.state === "up") up++;
        else if (r.d.state === "down") down++;
      }
    }
    const dd = $("reals-up");
    dd.textContent = `${num(up)}/${num(total)}`;
    dd.className = down ? "bad" : "";
    const s = model.status || {};
    const conf = (s.config || "").split("/").pop();
    document.title = `lvsmon ${conf}: ${up}/${total} up`;
  }

  function paintHeader(s) {
    const st = s.stats || {};
    $("phase").textContent = s.phase || "…";
    $("phase").className = s.phase === "running" ? "" : "warn";
    $("config").textContent = s.config || "…";
    $("backend").textContent = s.backend || "…";
    $("pid").textContent = s.pid ? String(s.pid) : "…";
    $("uptime").textContent = s.started_at ? duration(Date.now() / 1000 - s.started_at) : "…";
    const now = performance.now();
    if (typeof st.checks_done === "number") {
      // over at least two seconds: a refresh right after another says little
      if (!model.rate || st.checks_done < model.rate[0]) {
        model.rate = [st.checks_done, now];
      } else if (now - model.rate[1] >= 2000) {
        const perS = ((st.checks_done - model.rate[0]) * 1000) / (now - model.rate[1]);
        $("checks-rate").textContent = perS.toFixed(perS < 10 ? 1 : 0);
        model.rate = [st.checks_done, now];
      }
      $("checks-done").textContent = `${num(st.checks_done)} (${num(st.checks_failed)} failed)`;
    }
    const late = st.lateness_ms || {};
    $("lateness").textContent = typeof late.p99 === "number" ? `${late.p99} ms` : "—";
    const ops = $("ops");
    ops.textContent = `${num(st.ops_applied)} applied, ${num(st.ops_failed)} failed` +
      (st.drift_repairs ? `, ${num(st.drift_repairs)} drift repairs` : "") +
      (st.retry_pending ? ", retrying" : "");
    ops.className = st.ops_failed || st.retry_pending ? "bad" : "";
    paintBgp(s.bgp);
    paintProbes(s.probes);
    paintArp(s.arp_conflicts);
    paintLeaving(s.leaving);
  }

  // ---- /status ----------------------------------------------------------------------------

  function applyStatus(s) {
    model.status = s;
    const shape = shapeOf(s);
    if (shape !== model.shape) {
      model.shape = shape;
      rebuild(s);
    } else {
      (s.virtuals || []).forEach((v, i) => {
        const g = model.groups[i];
        v.reals.forEach((d, j) => {
          const r = g.reals[j];
          r.d = d;
          r.hay = null;
        });
      });
    }
    let latency = false;
    for (const v of s.virtuals || []) {
      for (const d of v.reals) if (typeof d.latency_ms === "number") { latency = true; break; }
      if (latency) break;
    }
    document.body.classList.toggle("no-latency", !latency);
    paintHeader(s);
    renderAll();
    if (!model.loaded) {
      model.loaded = true;
      document.body.dataset.loaded = "1";
    }
  }

  async function refresh() {
    clearTimeout(refreshTimer);
    const stamp = $("refreshed");
    try {
      const response = await fetch("status", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      applyStatus(await response.json());
      stamp.textContent = clock(Date.now() / 1000);
      stamp.className = "";
      $("notice").hidden = true;
    } catch (err) {
      stamp.textContent = "unreachable";
      stamp.className = "bad";
      const notice = $("notice");
      notice.textContent = `lvsmon does not answer (${err.message}); the page shows the last` +
        " state it saw and retries.";
      notice.hidden = false;
    }
    refreshTimer = setTimeout(refresh, REFRESH_MS);
  }

  // the BGP announcements (the status's bgp, as GET /bgp has it): one header fact, the VIPs
  // in its tooltip; hidden without bgp
  function paintBgp(b) {
    const fact = $("bgp-fact");
    if (!b || !b.speaker) {
      fact.hidden = true;
      return;
    }
    const vips = b.vips || [];
    const up = vips.filter((v) => v.announced).length;
    const dd = $("bgp");
    dd.textContent = b.drained ? `drained (${b.speaker})` : `${up}/${vips.length} announced (${b.speaker})`;
    dd.className = b.drained || up < vips.length ? "warn" : "";
    dd.title = vips.map((v) => `${v.vip}: ${v.announced ? "announced" : "withdrawn"} since ` +
      `${clock(v.since)}: ${v.reason}`).join("\n");
    fact.hidden = false;
  }

  // checkpath's probe services (the status's probes): how many the config wants and how many
  // the kernel has as wanted; hidden when no real is checked through the VIP
  function paintProbes(p) {
    const fact = $("probes-fact");
    if (!p || !p.services) {
      fact.hidden = true;
      return;
    }
    const dd = $("probes");
    dd.textContent = p.in_kernel === p.services ? `${num(p.services)} in the kernel`
      : `${num(p.in_kernel)} of ${num(p.services)} in the kernel`;
    dd.className = p.in_kernel < p.services ? "warn" : "";
    dd.title = `checks through the VIP (checkpath): firewall marks from ${p.markbase}`;
    fact.hidden = false;
  }

  // the ARP guard's conflicts now (another MAC answering for a VIP); hidden when there are none
  function paintArp(conflicts) {
    const fact = $("arp-fact");
    if (!conflicts || !conflicts.length) {
      fact.hidden = true;
      return;
    }
    const dd = $("arp");
    dd.textContent = `${conflicts.length} conflict${conflicts.length === 1 ? "" : "s"}`;
    dd.className = "bad";
    dd.title = conflicts.map((c) => `${c.vip} answered by ${c.mac} on ${c.interface} since ` +
      `${clock(c.since)}`).join("\n");
    fact.hidden = false;
  }

  // reals a reload removed that drain at weight 0 (removedrain); hidden when none leaves
  function paintLeaving(leaving) {
    const fact = $("leaving-fact");
    if (!leaving || !leaving.length) {
      fact.hidden = true;
      return;
    }
    const dd = $("leaving");
    dd.textContent = `${leaving.length} real${leaving.length === 1 ? "" : "s"} leaving`;
    dd.className = "warn";
    dd.title = leaving.map((l) => `${l.real} of ${l.virtual}: weight 0, ` +
      (l.connections === null ? "connections not read yet" : `${l.connections} connections`) +
      `, deleted at ${clock(l.deadline)} at the latest`).join("\n");
    fact.hidden = false;
  }

  const refreshSoon = () => {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 300);
  };

  // ---- /events ----------------------------------------------------------------------------

  function touch(r) {
    r.hay = null;
    dirty.add(r.g);
  }

  function setWeight(virtual, real, weight) {
    const r = findReal(virtual, real);
    if (r && r.d.kernel_weight !== weight) {
      r.d.kernel_weight = weight;
      touch(r);
    }
  }

  // an event's effect on the rows; the next /status refresh corrects anything missed
  function apply(e) {
    const ref = e.ref || {};
    switch (e.type) {
      case "RealChanged": {
        const r = findReal(ref.virtual, ref.real);
        if (!r) break;
        if (r.d.state !== "maintenance") r.d.state = e.up ? "up" : "down";
        r.d.reason = e.reason;
        r.d.checked = true;
        if (e.up) {
          r.d.failcount = 0;
          r.d.rising = null;
          r.d.held_until = null;
          r.d.kept_by_threshold = false;
        }
        touch(r);
        break;
      }
      case "FirstCheckDown": {
        const r = findReal(ref.virtual, ref.real);
        if (!r) break;
        r.d.reason = e.reason;
        r.d.checked = true;
        touch(r);
        break;
      }
      case "SoftFailure": {
        const r = findReal(ref.virtual, ref.real);
        if (!r) break;
        r.d.failcount = e.failcount;
        r.d.reason = e.reason;
        touch(r);
        break;
      }
      case "SoftReset": {
        const r = findReal(ref.virtual, ref.real);
        if (r) {
          r.d.failcount = 0;
          touch(r);
        }
        break;
      }
      case "WeightChanged":
        setWeight(e.service, e.dest, e.new === undefined ? null : e.new);
        break;
      case "KernelOp": {
        const op = e.op || {};
        if (e.error || !op.real) break;
        if (op.kind === "DeleteDest") setWeight(op.virtual, op.real, null);
        const w = /\s-w\s+(\d+)/.exec(op.ipvsadm || "");
        if (w && (op.kind === "AddDest" || op.kind === "EditDest")) {
          setWeight(op.virtual, op.real, Number(w[1]));
        }
        break;
      }
      case "AgentChanged": {
        const r = findReal(ref.virtual, ref.real);
        if (r && r.d.agent !== e.text) {
          r.d.agent = e.text;
          touch(r);
        }
        break;
      }
      case "DrainChanged": {
        const virtual = ref.virtual || e.virtual;
        const real = ref.real || e.real;
        const drained = e.drained !== false;
        for (const g of model.groups) {
          if (virtual && g.key !== virtual && g.name !== virtual) continue;
          const r = g.byReal.get(real);
          if (r && r.d.drained !== drained) {
            r.d.drained = drained;
            touch(r);
          }
        }
        break;
      }
      case "PhaseChanged":
        if (model.status) model.status.phase = e.phase;
        $("phase").textContent = e.phase;
        $("phase").className = e.phase === "running" ? "" : "warn";
        break;
      case "ConfigLoaded":
        refreshSoon(); // virtuals and reals may have changed
        break;
      case "DepoolLimited":
        refreshSoon(); // which reals the threshold keeps in: /status says
        break;
      case "RouteChanged":
        refreshSoon(); // the BGP fact: /bgp says
        break;
      case "ArpConflict":
      case "ArpConflictCleared":
        refreshSoon(); // the ARP guard's fact: /status says
        break;
      case "RealLeaving":
        refreshSoon(); // the leaving fact: /status says
        break;
      default:
        break;
    }
  }

  function describe(e) {
    const ref = e.ref || {};
    const at = (x) => `${x.real} (${x.virtual})`;
    switch (e.type) {
      case "RealChanged":
        return [`${at(ref)} ${e.up ? "up" : "down"}: ${e.reason}`, e.up ? "up" : "down"];
      case "FirstCheckDown":
        return [`${at(ref)} down from its first check: ${e.reason}`, "down"];
      case "SoftFailure":
        return [`${at(ref)} failed ${e.failcount}/${e.failurecount}: ${e.reason}`, "soft"];
      case "SoftReset":
        return [`${at(ref)} passed again`, ""];
      case "KernelOp":
        return [
          (e.text || (e.op && e.op.ipvsadm) || "") + (e.error ? ` FAILED: ${e.error}` : "") +
            (e.drift ? " (drift repaired)" : ""),
          e.error ? "bad" : "",
        ];
      case "WeightChanged": {
        const w = (x) => (x === null || x === undefined ? "absent" : x);
        return [`${e.dest} (${e.service}) weight ${w(e.old)} → ${w(e.new)}`, ""];
      }
      case "FallbackChanged":
        return [`${e.service}: ${e.active ? "no real up, fallback active" : "fallback off"}`,
          e.active ? "down" : "up"];
      case "ConfigLoaded":
        return [`${e.path}: ${e.virtuals} virtual services`, ""];
      case "ConfigFileChanged":
        return [`${e.path} changed`, ""];
      case "ConfigRejected":
        return [`${e.path}: ${e.message}`, "bad"];
      case "PhaseChanged":
        return [`phase ${e.phase}`, ""];
      case "SyncDaemonOp":
        return [`${e.action} ${e.daemon}${e.error ? `: ${e.error}` : ""}`, e.error ? "bad" : ""];
      case "RealLeaving":
        return [e.started
          ? `${e.dest} (${e.service}) leaving (${e.reason}): weight 0, ${e.seconds} s at most`
          : `${e.dest} (${e.service}) left after ${Number(e.seconds).toFixed(1)} s: ${e.reason}`,
        "drained"];
      case "CertificateExpiring": {
        const left = (Number(e.not_after) - Date.now() / 1000) / 86400;
        const day = new Date(Number(e.not_after) * 1000).toISOString().slice(0, 10);
        return [left < 0 ? `${at(ref)} TLS certificate expired on ${day}`
          : `${at(ref)} TLS certificate expires on ${day} (in ${Math.floor(left)} days)`, "bad"];
      }
      case "AgentChanged":
        return [`${at(ref)} agent: ${e.text}`, e.out ? "down" : e.weight === 0 ? "drained" : ""];
      case "DrainChanged": {
        const real = ref.real || e.real;
        const virtual = ref.virtual || e.virtual || "every virtual";
        return [`${real} (${virtual}) ${e.drained === false ? "undrained" : "drained"}`, "drained"];
      }
      case "DepoolLimited": {
        const kept = (e.kept || []).map((x) => x.real);
        return [e.active
          ? `${e.service}: depool threshold reached, ${kept.length} kept in although their checks fail: ${kept.join(", ")}`
          : `${e.service}: depool threshold no longer reached`, e.active ? "bad" : "up"];
      }
      case "RouteChanged": {
        const what = e.error
          ? `cannot ${e.announced ? "announce" : "withdraw"} VIP ${e.vip} (${e.speaker}): ${e.error}`
          : e.announced
            ? `VIP ${e.vip} announced (MED ${e.med}${e.graceful ? ", GRACEFUL_SHUTDOWN" : ""}): ${e.reason}`
            : `VIP ${e.vip} withdrawn: ${e.reason}`;
        return [`BGP: ${what}`, e.error ? "bad" : e.announced && !e.graceful ? "up" : "down"];
      }
      default: {
        const { type, seq, at: _at, ...rest } = e;
        return [JSON.stringify(rest), ""];
      }
    }
  }

  function eventRow(e) {
    const [text, cls] = describe(e);
    const li = el("li", cls ? `ev ${cls}` : "ev");
    li.dataset.type = e.type;
    li.dataset.seq = String(e.seq);
    li.append(el("time", "", typeof e.at === "number" ? clock(e.at) : ""),
      el("span", "etype", e.type), el("span", "etext", text));
    return li;
  }

  function schedulePaint() {
    if (paintTimer === null) paintTimer = setTimeout(paint, PAINT_MS);
  }

  function paint() {
    paintTimer = null;
    if (dirty.size) {
      for (const g of dirty) renderGroup(g);
      dirty.clear();
      paintTotals();
    }
    if (pending.length) {
      const list = $("events");
      const frag = document.createDocumentFragment();
      for (let i = pending.length - 1; i >= 0; i--) frag.append(eventRow(pending[i]));
      pending = [];
      list.prepend(frag);
      while (list.childElementCount > EVENTS_KEPT) list.lastElementChild.remove();
    }
  }

  function onFrame(message) {
    let e;
    try {
      e = JSON.parse(message.data);
    } catch (_err) {
      return;
    }
    if (typeof e.seq === "number") {
      if (e.seq <= lastSeq) return;
      lastSeq = e.seq;
    }
    if (model.loaded) apply(e);
    pending.push(e);
    if (pending.length > EVENTS_KEPT) pending = pending.slice(-EVENTS_KEPT);
    schedulePaint();
  }

  function setStream(state) {
    const dd = $("stream");
    dd.textContent = state;
    dd.className = `conn-${state}`;
  }

  function connect() {
    const source = new EventSource("events");
    let opened = false;
    source.addEventListener("open", () => {
      setStream("live");
      // the server replays its last events to each connection: after a reconnect (perhaps to
      // a restarted daemon, whose numbers start again) the pane is filled anew from them
      if (opened || lastSeq) {
        lastSeq = 0;
        pending = [];
        $("events").replaceChildren();
      }
      opened = true;
      refreshSoon();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        setStream("closed");
        setTimeout(connect, REFRESH_MS);
      } else {
        setStream("reconnecting");
      }
    });
    for (const type of EVENT_TYPES) source.addEventListener(type, onFrame);
  }

  // ---- controls ---------------------------------------------------------------------------

  function openNow(g) {
    if (filtering()) return g.filterOpen === null ? true : g.filterOpen;
    return g.open;
  }

  function setup() {
    $("groups").addEventListener("click", (ev) => {
      const target = ev.target instanceof Element ? ev.target : null;
      const section = target && target.closest(".vgroup");
      if (!section) return;
      const g = model.byKey.get(section.dataset.key);
      if (!g) return;
      if (target.closest(".vhead")) {
        const open = !openNow(g);
        if (filtering()) g.filterOpen = open;
        else g.open = open;
        renderGroup(g);
      } else if (target.closest(".more")) {
        g.cap += ROW_CAP;
        renderGroup(g);
      }
    });
    let typing = null;
    const onFilter = () => {
      view.terms = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
      view.problemsOnly = $("problems").checked;
      for (const g of model.groups) {
        g.filterOpen = null;
        g.cap = ROW_CAP;
      }
      renderAll();
    };
    $("filter").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(onFilter, 120);
    });
    $("problems").addEventListener("change", onFilter);
    const openAll = (open) => {
      for (const g of model.groups) {
        if (filtering()) g.filterOpen = open;
        else g.open = open;
      }
      renderAll();
    };
    $("expand-all").addEventListener("click", () => openAll(true));
    $("collapse-all").addEventListener("click", () => openAll(false));
    document.body.classList.add("no-latency");
    refresh();
    connect();
  }

  setup();
})();
