// The fedpact dashboard: a small hash-routed single-page app over the hub's /api/v1.
import { api, ApiError, formatDetail, session, setUnauthorizedHandler } from "./api.js";

// ---------------------------------------------------------------------------------------
// DOM helpers: elements are built, never assembled from HTML strings, so no task name or
// description can inject markup.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const main = () => document.getElementById("main");
let pageTimers = [];
let pageCharts = [];
function every(ms, fn) {
  pageTimers.push(setInterval(fn, ms));
}
function leavePage() {
  pageTimers.forEach(clearInterval);
  pageTimers = [];
  pageCharts.forEach((c) => c.destroy());
  pageCharts = [];
}

function render(...nodes) {
  const m = main();
  m.replaceChildren(...nodes);
  const heading = m.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

function flash(text, kind = "info") {
  const box = document.getElementById("flash");
  box.replaceChildren(h("p", { class: `flash ${kind}` }, text));
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => box.replaceChildren(), 8000);
}

function errorBox(id) {
  return h("div", { id, class: "error-box", role: "alert", hidden: true });
}
function showError(box, err) {
  box.hidden = false;
  box.replaceChildren(h("p", {}, err instanceof Error ? err.message : String(err)));
}

const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const fmtNum = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : String(v ?? ""));

const STATUS = {
  CREATED: { icon: "\u25CB", label: "created, waiting for participants" },
  RUNNING: { icon: "\u25B6", label: "running" },
  COMPLETE: { icon: "\u2714", label: "complete" },
  FAILED: { icon: "\u2716", label: "failed" },
  CANCELLED: { icon: "\u2298", label: "cancelled" },
};
function statusBadge(status) {
  const s = STATUS[status] || { icon: "?", label: status };
  return h("span", { class: `status status-${status.toLowerCase()}`, title: s.label },
    h("span", { class: "status-icon", "aria-hidden": "true" }, s.icon), " ", status);
}

const PRIVACY = [
  ["open", "Plain federated averaging: the aggregator sees each participant's update."],
  ["secure", "Secure aggregation: pairwise masks hide each update; the aggregator only sees their sum."],
  ["dp", "Differential privacy: updates are clipped and noised; an accountant reports epsilon."],
  ["secure+dp", "Both: distributed noise under secure aggregation; only the noised sum is visible."],
  ["encrypted", "Homomorphic encryption: the aggregator handles ciphertexts only, never the model."],
];
// The strategies, as the hub declares them (GET /api/v1/algorithms): fetched once per page load.
let algorithmList = null;
async function algorithms() {
  if (!algorithmList) algorithmList = await api.algorithms();
  return algorithmList;
}
const MODELS = [
  ["softmax_regression", "Softmax regression (NumPy)"],
  ["mlp", "Multi-layer perceptron (PyTorch)"],
  ["cnn", "Convolutional network (PyTorch, images)"],
];

// ---------------------------------------------------------------------------------------
// Routing
const routes = [
  [/^#\/login$/, pageLogin, false],
  [/^#\/register$/, pageRegister, false],
  [/^#\/tasks$/, pageTasks, true],
  [/^#\/new$/, pageNewTask, true],
  [/^#\/task\/([^/]+)$/, pageTask, true],
  [/^#\/model\/(\d+)$/, pageModel, true],
];

function parseHash() {
  const raw = location.hash || "#/tasks";
  const [path, query] = raw.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

async function route() {
  leavePage();
  const { path, params } = parseHash();
  renderNav();
  for (const [re, page, needsLogin] of routes) {
    const m = path.match(re);
    if (!m) continue;
    if (needsLogin && !session.token) {
      location.hash = "#/login";
      return;
    }
    try {
      await page(params, ...m.slice(1).map(decodeURIComponent));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      render(h("h1", {}, "Something went wrong"), h("div", { class: "error-box", role: "alert" }, h("p", {}, err.message)),
        h("p", {}, h("a", { href: "#/tasks" }, "Back to the tasks")));
    }
    return;
  }
  location.hash = session.token ? "#/tasks" : "#/login";
}

function renderNav() {
  const nav = document.getElementById("nav");
  const user = session.user;
  if (!session.token || !user) {
    nav.replaceChildren(h("a", { href: "#/login" }, "Log in"), h("a", { href: "#/register" }, "Register"));
    return;
  }
  nav.replaceChildren(
    h("a", { href: "#/tasks" }, "Tasks"),
    h("a", { href: "#/new" }, "New task"),
    h("span", { class: "whoami", title: user.organisation }, user.name),
    h("button", { type: "button", class: "link", onclick: logout }, "Log out"),
  );
}

async function logout() {
  try {
    await api.logout();
  } catch {
    /* the token may already be gone */
  }
  session.clear();
  location.hash = "#/login";
  flash("You are logged out.");
}

setUnauthorizedHandler((detail) => {
  session.clear();
  flash(`Please log in again: ${formatDetail(detail)}`, "error");
  location.hash = "#/login";
});

// ---------------------------------------------------------------------------------------
// Forms: labelled inputs, errors attached to the field they are about.
function field(id, label, input, hint) {
  input.id = id;
  if (!input.name) input.name = id;
  const err = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  input.setAttribute("aria-describedby", [hintEl ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "));
  return h("div", { class: "field", dataset: { field: id } }, h("label", { for: id }, label), input, hintEl, err);
}

function setFieldError(form, id, message) {
  const input = form.querySelector(`#${CSS.escape(id)}`);
  const err = form.querySelector(`#${CSS.escape(id)}-error`);
  if (!input || !err) return false;
  err.hidden = false;
  err.textContent = message;
  input.setAttribute("aria-invalid", "true");
  return true;
}

function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((e) => {
    e.hidden = true;
    e.textContent = "";
  });
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  form.querySelectorAll(".error-box").forEach((e) => {
    e.hidden = true;
    e.replaceChildren();
  });
}

function focusFirstError(form) {
  const bad = form.querySelector("[aria-invalid=true]") || form.querySelector(".error-box:not([hidden])");
  if (bad) bad.focus();
}

// ---------------------------------------------------------------------------------------
// Login and registration
function pageLogin(params) {
  if (session.token) {
    location.hash = "#/tasks";
    return;
  }
  const box = errorBox("login-error");
  const form = h("form", { class: "card narrow", novalidate: true },
    h("h1", {}, "Log in"),
    box,
    field("login-name", "User name", h("input", { autocomplete: "username", required: true })),
    field("login-password", "Password", h("input", { type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit", class: "primary" }, "Log in"),
    h("p", {}, "No account yet? ", h("a", { href: "#/register" }, "Register")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const name = form.querySelector("#login-name").value.trim();
    const password = form.querySelector("#login-password").value;
    let bad = false;
    if (!name) bad = setFieldError(form, "login-name", "Enter your user name.");
    if (!password) bad = setFieldError(form, "login-password", "Enter your password.") || bad;
    if (bad) return focusFirstError(form);
    try {
      const out = await api.login(name, password);
      session.save(out.token, out.user);
      document.getElementById("flash").replaceChildren();
      location.hash = params.get("next") || "#/tasks";
    } catch (err) {
      showError(box, err.status === 401 ? "Wrong user name or password. Check both and try again." : err);
      box.setAttribute("tabindex", "-1");
      box.focus();
    }
  });
  render(form);
}

function pageRegister() {
  const box = errorBox("register-error");
  const form = h("form", { class: "card narrow", novalidate: true },
    h("h1", {}, "Create an account"),
    box,
    field("reg-name", "User name", h("input", { autocomplete: "username", required: true, maxlength: 64 }),
      "3 to 64 letters, digits, '_', '.' or '-'."),
    field("reg-organisation", "Organisation", h("input", { autocomplete: "organization", required: true, maxlength: 200 })),
    field("reg-password", "Password", h("input", { type: "password", autocomplete: "new-password", required: true }),
      "At least 10 characters, not your user name, not a common password."),
    field("reg-confirm", "Repeat the password", h("input", { type: "password", autocomplete: "new-password", required: true })),
    h("button", { type: "submit", class: "primary" }, "Register"),
    h("p", {}, "Already registered? ", h("a", { href: "#/login" }, "Log in")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const v = (id) => form.querySelector(`#${id}`).value;
    const name = v("reg-name").trim();
    const organisation = v("reg-organisation").trim();
    const password = v("reg-password");
    let bad = false;
    if (!/^[A-Za-z0-9_.-]{3,64}$/.test(name)) bad = setFieldError(form, "reg-name", "Use 3 to 64 letters, digits, '_', '.' or '-'.");
    if (!organisation) bad = setFieldError(form, "reg-organisation", "Enter your organisation.") || bad;
    if (password.length < 10) bad = setFieldError(form, "reg-password", "The password needs at least 10 characters.") || bad;
    else if (password !== v("reg-confirm")) bad = setFieldError(form, "reg-confirm", "The two passwords differ: type the same password twice.") || bad;
    if (bad) return focusFirstError(form);
    try {
      await api.register(name, password, organisation);
    } catch (err) {
      if (err.status === 409) setFieldError(form, "reg-name", `The name "${name}" is taken: choose another one, or log in if it is yours.`);
      else if (err.status === 422 && Array.isArray(err.detail)) {
        const map = { name: "reg-name", password: "reg-password", organisation: "reg-organisation" };
        for (const d of err.detail) {
          const key = (d.loc || []).filter((p) => p !== "body")[0];
          if (!map[key] || !setFieldError(form, map[key], d.msg)) showError(box, d.msg);
        }
      } else showError(box, err);
      return focusFirstError(form);
    }
    const out = await api.login(name, password);
    session.save(out.token, out.user);
    flash(`Welcome, ${name}. Your account is ready.`);
    location.hash = "#/tasks";
  });
  render(form);
}

// ---------------------------------------------------------------------------------------
// Task list
async function pageTasks(params) {
  const filters = {
    q: params.get("q") || "",
    status: params.get("status") || "",
    privacy: params.get("privacy") || "",
    algorithm: params.get("algorithm") || "",
    mine: params.get("mine") === "true",
    joined: params.get("joined") === "true",
  };
  const select = (id, label, options, value) => {
    const s = h("select", {}, h("option", { value: "" }, "any"),
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text || v)));
    return field(id, label, s);
  };
  const check = (id, label, checked) =>
    h("div", { class: "field check" }, h("input", { type: "checkbox", id, name: id, checked }), h("label", { for: id }, label));
  const search = h("input", { type: "search", value: filters.q, placeholder: "name or description" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter tasks" },
    field("f-q", "Search", search),
    select("f-status", "Status", Object.keys(STATUS).map((s) => [s, s]), filters.status),
    select("f-privacy", "Privacy mode", PRIVACY.map(([m]) => [m, m]), filters.privacy),
    select("f-algorithm", "Algorithm", (await algorithms()).map((a) => [a.name, a.name]), filters.algorithm),
    check("f-mine", "Created by me", filters.mine),
    check("f-joined", "Joined by me", filters.joined),
  );
  const apply = () => {
    const q = new URLSearchParams();
    const val = (id) => form.querySelector(`#${id}`);
    if (val("f-q").value.trim()) q.set("q", val("f-q").value.trim());
    for (const [id, key] of [["f-status", "status"], ["f-privacy", "privacy"], ["f-algorithm", "algorithm"]]) {
      if (val(id).value) q.set(key, val(id).value);
    }
    if (val("f-mine").checked) q.set("mine", "true");
    if (val("f-joined").checked) q.set("joined", "true");
    const s = q.toString();
    history.replaceState(null, "", s ? `#/tasks?${s}` : "#/tasks");
    load();
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    apply();
  });
  form.addEventListener("change", apply);
  let debounce;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(apply, 250);
  });

  const results = h("div", { id: "task-results", "aria-live": "polite" });
  const box = errorBox("tasks-error");
  render(
    h("div", { class: "page-head" }, h("h1", {}, "Tasks"), h("a", { class: "button primary", href: "#/new" }, "New task")),
    form, box, results,
  );

  // A load that a newer one overtook (the filters changed while it was on its way) is
  // dropped: answers can arrive out of order, and the older one would show stale rows.
  let latest = 0;
  async function load() {
    const ticket = ++latest;
    const { params: p } = parseHash();
    let out;
    try {
      out = await api.tasks({
        q: p.get("q"), status: p.get("status"), privacy: p.get("privacy"), algorithm: p.get("algorithm"),
        mine: p.get("mine") === "true", joined: p.get("joined") === "true", limit: 200,
      });
    } catch (err) {
      if (ticket === latest && err.status !== 401) showError(box, err);
      return;
    }
    if (ticket !== latest) return;
    box.hidden = true;
    if (!out.items.length) {
      results.replaceChildren(h("p", { class: "empty" }, "No task matches. Change the filters, or create a task."));
      return;
    }
    const rows = out.items.map((t) => {
      const d = t.definition || {};
      return h("tr", { dataset: { task: t.name } },
        h("td", { "data-label": "Name" }, h("a", { href: `#/task/${encodeURIComponent(t.name)}` }, t.name)),
        h("td", { "data-label": "Status" }, statusBadge(t.status)),
        h("td", { "data-label": "Privacy" }, (d.privacy || {}).mode || "open"),
        h("td", { "data-label": "Algorithm" }, (d.algorithm || {}).name || "fedavg", h("span", { class: "sub" }, ` (${(d.model || {}).name || "?"})`)),
        h("td", { "data-label": "Creator" }, t.creator),
        h("td", { "data-label": "Created" }, h("time", { datetime: t.created_at }, fmtTime(t.created_at))),
        h("td", { "data-label": "Participants", class: "num" }, String((t.participants || []).length)),
      );
    });
    results.replaceChildren(
      h("p", { class: "count" }, `${out.total} task${out.total === 1 ? "" : "s"}`),
      h("table", { class: "tasks responsive" },
        h("thead", {}, h("tr", {}, ["Name", "Status", "Privacy", "Algorithm", "Creator", "Created", "Participants"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows)),
    );
  }
  await load();
}

// ---------------------------------------------------------------------------------------
// Task creation
async function pageNewTask() {
  const catalog = await algorithms();
  const num = (attrs) => h("input", { type: "number", inputmode: "decimal", ...attrs });
  const box = errorBox("new-error");
  const privacy = h("fieldset", { class: "field", id: "t-privacy", dataset: { field: "t-privacy" }, tabindex: "-1" },
    h("legend", {}, "Privacy mode"),
    h("p", { class: "hint" }, "Who may see what. A hub refuses the modes it does not offer yet, and says which it does."),
    PRIVACY.map(([mode, text], i) =>
      h("div", { class: "radio" },
        h("input", { type: "radio", name: "privacy", id: `t-privacy-${i}`, value: mode, checked: mode === "open" }),
        h("label", { for: `t-privacy-${i}` }, h("strong", {}, mode), " \u2014 ", text))),
    h("p", { class: "field-error", id: "t-privacy-error", hidden: true }));
  const modelSel = h("select", {}, MODELS.map(([v, t]) => h("option", { value: v }, t)));
  const algSel = h("select", {}, catalog.map((a) => h("option", { value: a.name }, a.title)));
  // One input per declared parameter of each strategy; only the chosen strategy's are shown.
  const paramId = (a, p) => `t-alg-${a.name}-${p.name}`;
  const bound = (p) => {
    const attrs = { step: p.type === "int" ? "1" : "any", value: p.default === null ? "" : String(p.default) };
    if (p.minimum !== null) attrs.min = String(p.minimum);
    if (p.maximum !== null) attrs.max = String(p.maximum);
    return attrs;
  };
  const paramFields = catalog.flatMap((a) => a.params.map((p) =>
    field(paramId(a, p), `${a.title} ${p.name}`, num(bound(p)), p.help + (p.default === null ? " Leave empty for the default." : ""))));
  const algHint = h("p", { class: "hint", id: "t-algorithm-summary" });
  const kindSel = h("select", {}, h("option", { value: "tabular" }, "tabular (CSV columns)"), h("option", { value: "image" }, "image"));

  const form = h("form", { class: "card wide", novalidate: true, id: "new-task" },
    h("h1", {}, "New task"),
    box,
    h("section", {}, h("h2", {}, "What"),
      field("t-name", "Name", h("input", { required: true, maxlength: 100 }), "3 to 100 letters, digits, '_', '.' or '-'; unique on this hub."),
      field("t-description", "Description", h("textarea", { rows: 3 }), "What the task is for and which data fits; data owners read this.")),
    h("section", { class: "grid" }, h("h2", {}, "Model and algorithm"),
      field("t-model", "Model", modelSel),
      field("t-hidden", "Hidden layer widths (MLP, CNN)", h("input", { value: "64" }), "MLP: comma-separated, e.g. 128, 64. CNN: one width."),
      field("t-dropout", "Dropout (MLP, CNN)", num({ step: "any", value: "0", min: "0", max: "1" })),
      field("t-l2", "L2 penalty (softmax regression)", num({ step: "any", value: "0", min: "0" })),
      field("t-algorithm", "Algorithm", algSel), algHint, paramFields),
    h("section", { class: "grid" }, h("h2", {}, "Privacy"), privacy,
      field("t-clip", "Clip norm (DP)", num({ step: "any", min: "0", value: "1.0" }), "L2 bound on each participant's update."),
      field("t-noise", "Noise multiplier (DP)", num({ step: "any", min: "0", value: "1.0" }), "Gaussian noise relative to the clip norm; epsilon follows. Leave empty to give a target epsilon instead."),
      field("t-epsilon", "Target epsilon (DP)", num({ step: "any", min: "0" }), "Optional instead of the noise multiplier."),
      field("t-delta", "Delta (DP)", num({ step: "any", min: "0", max: "1" }), "Optional; the hub's default otherwise."),
      field("t-threshold", "Secret-sharing threshold (secure)", num({ step: "1", min: "1" }), "Optional: how many participants must stay to unmask a round.")),
    h("section", { class: "grid" }, h("h2", {}, "Rounds"),
      field("t-quorum", "Quorum", num({ min: "1", step: "1", value: "2" }), "Participants ready before round 1 starts."),
      field("t-min", "Minimum participants per round", num({ min: "1", step: "1", value: "1" }), "Valid updates a round needs."),
      field("t-rounds", "Rounds", num({ min: "1", step: "1", value: "10" })),
      field("t-epochs", "Local epochs", num({ min: "1", step: "1", value: "1" })),
      field("t-batch", "Batch size", num({ min: "1", step: "1", value: "32" })),
      field("t-lr", "Learning rate", num({ step: "any", value: "0.01", min: "0" })),
      field("t-timeout", "Round timeout (seconds)", num({ step: "any", value: "600", min: "1" }))),
    h("section", { class: "grid" }, h("h2", {}, "Data schema participants must supply"),
      field("t-kind", "Kind", kindSel),
      field("t-features", "Features", h("input", { value: "64" }), "A count, or the column names separated by commas (tabular)."),
      field("t-shape", "Sample shape (images)", h("input", { placeholder: "1, 28, 28" }), "channels, height, width"),
      field("t-label", "Label column", h("input", { value: "label" })),
      field("t-classes", "Classes", h("input", { value: "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" }), "The label values, comma-separated."),
      h("div", { class: "field check" }, h("input", { type: "checkbox", id: "t-standardize", name: "t-standardize" }),
        h("label", { for: "t-standardize" }, "Standardise features across participants")),
      field("t-holdout", "Hold-out share for evaluation", num({ step: "any", value: "0.2", min: "0", max: "0.99" }))),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create task"), h("a", { href: "#/tasks" }, "Cancel")),
  );

  // Which inputs a path of the definition belongs to (for the hub's 422 details).
  const FIELD_OF = {
    name: "t-name", description: "t-description",
    "definition.model": "t-model", "definition.model.name": "t-model", "definition.model.params": "t-hidden",
    "definition.algorithm": "t-algorithm", "definition.algorithm.name": "t-algorithm", "definition.algorithm.params": "t-algorithm",
    "definition.privacy": "t-privacy", "definition.privacy.mode": "t-privacy",
    "definition.privacy.clip_norm": "t-clip", "definition.privacy.noise_multiplier": "t-noise",
    "definition.privacy.target_epsilon": "t-epsilon", "definition.privacy.delta": "t-delta", "definition.privacy.threshold": "t-threshold",
    "definition.quorum": "t-quorum", "definition.min_participants": "t-min", "definition.rounds": "t-rounds",
    "definition.local_epochs": "t-epochs", "definition.batch_size": "t-batch", "definition.learning_rate": "t-lr",
    "definition.round_timeout_s": "t-timeout", "definition.data": "t-features", "definition.data.kind": "t-kind",
    "definition.data.features": "t-features", "definition.data.shape": "t-shape", "definition.data.label": "t-label",
    "definition.data.classes": "t-classes", "definition.evaluation.holdout": "t-holdout",
  };
  // Object-level errors name the field in their message ("min_participants (3) cannot exceed quorum (2)").
  const MENTIONS = [["clip_norm", "t-clip"], ["noise_multiplier", "t-noise"], ["target_epsilon", "t-epsilon"],
    ["min_participants", "t-min"], ["threshold", "t-threshold"], ["quorum", "t-quorum"], ["classes", "t-classes"], ["shape", "t-shape"],
    ["features", "t-features"], ["feature names", "t-features"], ["cnn", "t-model"], ["dropout", "t-dropout"], ["hidden", "t-hidden"], ["l2", "t-l2"], ["algorithm", "t-algorithm"], ["privacy mode", "t-privacy"]];

  const updateVisibility = () => {
    const m = modelSel.value;
    const show = (id, on) => { form.querySelector(`[data-field=${id}]`).hidden = !on; };
    show("t-hidden", m !== "softmax_regression");
    show("t-dropout", m !== "softmax_regression");
    show("t-l2", m === "softmax_regression");
    const chosen = catalog.find((a) => a.name === algSel.value);
    for (const a of catalog) for (const p of a.params) show(paramId(a, p), a === chosen);
    algHint.textContent = chosen ? `${chosen.summary} Privacy modes: ${chosen.privacy_modes.join(", ")}.` : "";
    show("t-shape", kindSel.value === "image");
    const mode = form.querySelector("input[name=privacy]:checked").value;
    const dp = mode === "dp" || mode === "secure+dp";
    for (const id of ["t-clip", "t-noise", "t-epsilon", "t-delta"]) show(id, dp);
    show("t-threshold", mode === "secure" || mode === "secure+dp");
  };
  form.addEventListener("change", updateVisibility);
  updateVisibility();

  const privacySpec = () => {
    const mode = form.querySelector("input[name=privacy]:checked").value;
    const spec = { mode };
    const v = (id) => form.querySelector(`#${id}`).value.trim();
    if (mode === "dp" || mode === "secure+dp") {
      for (const [id, key] of [["t-clip", "clip_norm"], ["t-noise", "noise_multiplier"], ["t-epsilon", "target_epsilon"], ["t-delta", "delta"]]) {
        if (v(id) !== "") spec[key] = numberOr(v(id));
      }
    }
    if ((mode === "secure" || mode === "secure+dp") && v("t-threshold") !== "") spec.threshold = numberOr(v("t-threshold"));
    return spec;
  };
  const algorithmSpec = () => {
    const chosen = catalog.find((a) => a.name === algSel.value);
    const params = {};
    for (const p of chosen ? chosen.params : []) {
      const text = form.querySelector(`#${paramId(chosen, p)}`).value.trim();
      if (text !== "") params[p.name] = numberOr(text);
    }
    return Object.keys(params).length ? { name: algSel.value, params } : { name: algSel.value };
  };
  const listOf = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
  const numberOr = (s) => (s !== "" && !Number.isNaN(Number(s)) ? Number(s) : s);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const v = (id) => form.querySelector(`#${id}`).value.trim();
    const model = modelSel.value;
    const params = {};
    if (model === "softmax_regression") {
      if (v("t-l2") !== "") params.l2 = numberOr(v("t-l2"));
    } else {
      // An MLP takes a list of layer widths, a CNN one width for its dense layer.
      const widths = listOf(v("t-hidden")).map(numberOr);
      if (widths.length) params.hidden = model === "cnn" ? widths[0] : widths;
      if (v("t-dropout") !== "") params.dropout = numberOr(v("t-dropout"));
    }
    const definition = {
      model: { name: model, params },
      algorithm: algorithmSpec(),
      privacy: privacySpec(),
      data: { kind: kindSel.value, label: v("t-label") || "label", classes: listOf(v("t-classes")).map(numberOr),
        standardize: form.querySelector("#t-standardize").checked },
      evaluation: {},
    };
    const feats = v("t-features");
    if (feats) definition.data.features = /^\d+$/.test(feats) ? Number(feats) : listOf(feats);
    if (kindSel.value === "image" && v("t-shape")) definition.data.shape = listOf(v("t-shape")).map(numberOr);
    if (kindSel.value === "image" && !v("t-features")) delete definition.data.features;
    for (const [id, key] of [["t-quorum", "quorum"], ["t-min", "min_participants"], ["t-rounds", "rounds"], ["t-epochs", "local_epochs"],
      ["t-batch", "batch_size"], ["t-lr", "learning_rate"], ["t-timeout", "round_timeout_s"]]) {
      if (v(id) !== "") definition[key] = numberOr(v(id));
    }
    if (v("t-holdout") !== "") definition.evaluation.holdout = numberOr(v("t-holdout"));
    const name = v("t-name");
    if (!name) {
      setFieldError(form, "t-name", "Give the task a name.");
      return focusFirstError(form);
    }
    try {
      const task = await api.createTask(name, form.querySelector("#t-description").value, definition);
      flash(`Task ${task.name} created. Share its page with the data owners.`);
      location.hash = `#/task/${encodeURIComponent(task.name)}`;
    } catch (err) {
      if (err.status === 409) setFieldError(form, "t-name", err.message);
      else if (err.status === 422 && Array.isArray(err.detail)) {
        const general = [];
        for (const d of err.detail) {
          const loc = (d.loc || []).filter((p) => p !== "body" && typeof p === "string");
          const msg = String(d.msg || "").replace(/^Value error, /, "");
          let placed = false;
          // An error about a whole object ("definition", "definition.privacy") names its field in the message.
          const objectLevel = ["definition", "definition.data", "definition.privacy", "definition.model", "definition.algorithm"].includes(loc.join("."));
          if (objectLevel) {
            const hit = MENTIONS.find(([word, id]) => new RegExp(`\\b${word}\\b`).test(msg) && !form.querySelector(`[data-field=${id}]`).hidden);
            if (hit) placed = setFieldError(form, hit[1], msg);
          }
          for (let n = loc.length; n > 0 && !placed; n--) {
            const key = loc.slice(0, n).join(".");
            if (FIELD_OF[key] && key !== "definition.data") placed = setFieldError(form, FIELD_OF[key], msg);
          }
          if (!placed) general.push(`${loc.join(".") || "task"}: ${msg}`);
        }
        if (general.length) {
          box.hidden = false;
          box.replaceChildren(h("p", {}, "The hub refused the task:"), h("ul", {}, general.map((g) => h("li", {}, g))));
        }
      } else showError(box, err);
      box.setAttribute("tabindex", "-1");
      focusFirstError(form);
    }
  });
  render(form);
}

// ---------------------------------------------------------------------------------------
// Task page
const SERIES = [
  ["train_loss", "training loss", "y"], ["val_loss", "hold-out loss", "y"], ["eval_loss", "evaluation loss", "y"],
  ["train_accuracy", "training accuracy", "y1"], ["val_accuracy", "hold-out accuracy", "y1"], ["eval_accuracy", "evaluation accuracy", "y1"],
  ["epsilon", "epsilon (DP)", "y2"],
];
const COLORS = ["#c0392b", "#e67e22", "#8e44ad", "#2a6fdb", "#16a085", "#27ae60", "#7f8c8d"];

function copyable(id, text) {
  const code = h("code", { id }, text);
  const btn = h("button", { type: "button", class: "copy", "aria-label": `Copy: ${text}` }, "Copy");
  btn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      btn.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      btn.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { btn.textContent = "Copy"; }, 2500);
  });
  return h("div", { class: "command" }, code, btn);
}

// The declared data preparation in one line (docs/algorithms.md "Data preparation").
function dataPreparation(data) {
  const parts = [data.header === false ? `no header row; columns ${(data.columns || []).join(", ")}` : "header row"];
  const missing = data.missing || "error";
  parts.push(missing === "impute" ? `missing values imputed with the federated ${data.impute || "mean"}` : missing === "drop" ? "rows with missing values dropped" : "missing values refused");
  const cats = Object.entries(data.categorical || {});
  if (cats.length) parts.push(`one-hot: ${cats.map(([c, v]) => `${c} (${v.join(", ")})`).join("; ")}`);
  return parts.join("; ");
}

function definitionSummary(d) {
  const rows = [
    ["Task kind", d.data.task || "classification"],
    ["Model", d.model ? `${d.model.name}${Object.keys(d.model.params || {}).length ? " " + JSON.stringify(d.model.params) : ""}` : "none (statistics only)"],
    ["Algorithm", `${d.algorithm.name}${Object.keys(d.algorithm.params || {}).length ? " " + JSON.stringify(d.algorithm.params) : ""}`],
    ["Privacy mode", `${d.privacy.mode} \u2014 ${(PRIVACY.find(([m]) => m === d.privacy.mode) || ["", ""])[1]}`],
    ["Rounds", d.rounds], ["Local epochs", d.local_epochs], ["Batch size", d.batch_size],
    ["Learning rate", d.learning_rate], ["Optimiser", d.optimizer], ["Quorum", d.quorum],
    ["Minimum participants", d.min_participants], ["Fraction per round", d.fraction], ["Round timeout", `${d.round_timeout_s} s`],
    ["Data", `${d.data.kind}; ${Array.isArray(d.data.features) ? d.data.features.join(", ") : (d.data.features ?? (d.data.shape || []).join("x"))} features${d.data.label ? `; label column "${d.data.label}"` : ""}${(d.data.classes || []).length ? `; classes ${d.data.classes.join(", ")}` : ""}${d.data.standardize ? "; standardised" : ""}`],
    ["Preparation", dataPreparation(d.data)],
    ["Hold-out", d.evaluation ? d.evaluation.holdout : ""],
    ["Admission", admissionText(d.admission)],
  ];
  return h("dl", { class: "summary" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
}

function admissionText(a) {
  const mode = (a && a.mode) || "approval";
  if (mode === "open") return "open \u2014 joining admits";
  if (mode === "approval") return "approval \u2014 the creator approves each request";
  const invited = [...(a.users || []), ...(a.organisations || []).map((o) => `organisation ${o}`)];
  return `invite \u2014 ${invited.join(", ")}`;
}

const STANDING = {
  PENDING: "Your request to join is pending: the creator has to approve it. You may start the participate command now; it waits for the approval.",
  DECLINED: "The creator declined your request to join this task.",
  REMOVED: "The creator removed you from this task.",
};

// The accuracy axis fits the data (0.9-0.97 would otherwise fill the top tenth of a 0-1
// axis), padded a little and kept within [0, 1].
function accuracyRange(datasets) {
  const values = datasets.flatMap((d) => d.data).filter((v) => typeof v === "number");
  if (!values.length) return { min: 0, max: 1 };
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const pad = Math.max(0.02, (hi - lo) * 0.1);
  return { min: Math.max(0, Math.floor((lo - pad) * 50) / 50), max: Math.min(1, Math.ceil((hi + pad) * 50) / 50) };
}

async function pageTask(_params, ref) {
  const me = session.user;
  let task = await api.task(ref);
  const name = task.name;
  const box = errorBox("task-error");
  const head = h("div", { class: "page-head" });
  const actions = h("div", { class: "actions", id: "task-actions" });
  const people = h("ul", { id: "participants" });
  const standing = h("p", { id: "join-state", role: "status", hidden: true });
  const requestList = h("ul", { id: "join-requests" });
  const requestSection = h("section", { id: "requests", hidden: true }, h("h2", {}, "Requests to join"), requestList);
  const history = h("tbody", {});
  const roundsBody = h("tbody", {});
  const chartWrap = h("div", { class: "chart" }, h("canvas", { id: "metrics-chart", role: "img", "aria-label": "Round metrics chart" }));
  const roundCount = h("p", { id: "round-count", class: "sub", "aria-live": "polite" });
  const hostedState = h("p", { id: "hosted-state" });
  const hostedLog = h("pre", { id: "hosted-log", class: "log", tabindex: "0", "aria-label": "Hosted aggregator log" });
  const hostedSection = h("section", { id: "hosted", hidden: true }, h("h2", {}, "Aggregator hosted on the hub"), hostedState, hostedLog);
  const modelBox = h("div", { id: "task-models" });
  const commandsBox = h("div", { id: "task-commands" });
  const hostedNotice = h("p", { id: "hosted-notice", class: "flash info", hidden: true },
    "The hub is running the aggregator; you may close this page.");
  const hub = location.origin;
  const label = task.definition.data.label;

  render(
    head, box, actions, standing, requestSection, hostedNotice,
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "Definition"), definitionSummary(task.definition),
        h("details", {}, h("summary", {}, "Full definition (JSON)"), h("pre", { id: "definition-json" }, JSON.stringify(task.definition, null, 2)))),
      h("section", {}, commandsBox, h("h2", {}, "Participants"), people)),
    h("section", {}, h("h2", {}, "Training progress"), roundCount, chartWrap,
      h("div", { class: "scroll" }, h("table", { class: "rounds" }, h("thead", {}, h("tr", {}, ["Round", "Status", "Participants", "Train loss", "Train accuracy", "Hold-out accuracy", "Eval accuracy"].map((c) => h("th", { scope: "col" }, c)))), roundsBody))),
    modelBox,
    hostedSection,
    h("section", {}, h("h2", {}, "Status history"), h("table", { class: "history" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "When"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Reason"))), history)),
  );

  let chart = null;
  if (window.Chart) {
    chart = new window.Chart(document.getElementById("metrics-chart"), {
      type: "line",
      data: { labels: [], datasets: [] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { labels: { boxWidth: 14, boxHeight: 8 } } },
        scales: {
          x: { title: { display: true, text: "round" } },
          y: { type: "linear", position: "left", title: { display: true, text: "loss" } },
          y1: { type: "linear", position: "right", title: { display: true, text: "accuracy" }, grid: { drawOnChartArea: false } },
          y2: { type: "linear", position: "right", display: false, title: { display: true, text: "epsilon" }, grid: { drawOnChartArea: false } },
        },
      },
    });
    pageCharts.push(chart);
  }

  let hosted = null;
  function drawTask() {
    const creator = task.creator === me.name;
    const member = creator || task.membership === "ADMITTED";
    const live = task.status === "CREATED" || task.status === "RUNNING";
    head.replaceChildren(
      h("div", {}, h("h1", {}, task.name), h("p", { class: "sub" }, "created by ", h("strong", {}, task.creator), " on ", fmtTime(task.created_at))),
      h("div", { id: "task-status" }, statusBadge(task.status)));
    if (task.description) head.append(h("p", { class: "description" }, task.description));
    const removeButton = (p) => h("button", { type: "button", id: `btn-remove-${p}`, class: "quiet", onclick: () => act("removeMember", { user: p }) }, "Remove");
    people.replaceChildren(...(task.participants.length
      ? task.participants.map((p) => h("li", {}, p, creator && live ? [" ", removeButton(p)] : []))
      : [h("li", { class: "sub" }, member ? "nobody has joined yet" : "visible to the creator and admitted participants")]));
    standing.hidden = !STANDING[task.membership];
    standing.textContent = STANDING[task.membership] || "";
    requestSection.hidden = !(creator && (task.requests || []).length);
    requestList.replaceChildren(...(task.requests || []).map((u) => h("li", {}, h("strong", {}, u), " ",
      h("button", { type: "button", id: `btn-approve-${u}`, class: "primary", onclick: () => act("approve", { user: u }) }, "Approve"), " ",
      h("button", { type: "button", id: `btn-decline-${u}`, onclick: () => act("decline", { user: u }) }, "Decline"))));
    history.replaceChildren(...task.events.map((e) => h("tr", {}, h("td", {}, fmtTime(e.at)), h("td", {}, statusBadge(e.status)), h("td", {}, e.reason || ""))));
    const hostedRunning = hosted && hosted.running;
    const buttons = [];
    if (live && !creator && !task.membership) buttons.push(h("button", { type: "button", id: "btn-join", class: "primary", onclick: () => act("join") }, "Join this task"));
    if (creator && live && !hostedRunning) {
      buttons.push(task.status === "RUNNING"
        ? h("button", { type: "button", id: "btn-host", onclick: () => act("host", { resume: true }) }, "Resume the aggregator on the hub")
        : h("button", { type: "button", id: "btn-host", class: "primary", onclick: () => act("host", { resume: false }) }, "Run the aggregator on the hub"));
    }
    if (creator && hostedRunning) buttons.push(h("button", { type: "button", id: "btn-stop-hosted", onclick: () => act("stop") }, "Stop the hosted aggregator"));
    if (live) buttons.push(h("button", { type: "button", id: "btn-cancel", class: creator ? "" : "quiet", title: creator ? "" : `only ${task.creator} may cancel it`, onclick: () => act("cancel") }, "Cancel task"));
    if (task.status !== "RUNNING") buttons.push(h("button", { type: "button", id: "btn-delete", class: creator ? "danger" : "danger quiet", title: creator ? "" : `only ${task.creator} may delete it`, onclick: () => act("delete") }, "Delete task"));
    actions.replaceChildren(...buttons);
    if (creator && live && !hostedRunning) {
      actions.append(h("details", { class: "eval" }, h("summary", {}, "Evaluation data for the hosted aggregator (optional)"),
        h("p", { class: "sub" }, "A CSV file with the same columns as the participants' data. It is uploaded to this task on the hub; the aggregator evaluates every round on it and stores a confusion matrix with the model. Without it, metrics come from the participants' hold-out data."),
        field("eval-file", "Evaluation CSV", h("input", { type: "file", accept: ".csv,text/csv" }))));
    }
    hostedSection.hidden = !(member && hosted && hosted.state !== "none");
    // Only while the hub really runs it: a finished task must not say the hub is at work.
    hostedNotice.hidden = !(hostedRunning && live);
    drawCommands(live, creator, hostedRunning);
  }

  function drawCommands(live, creator, hostedRunning) {
    // Commands a reader can still use: joining a finished task is impossible, so offer none.
    if (!live) {
      commandsBox.replaceChildren(h("h2", {}, "Taking part"),
        h("p", { id: "task-closed" }, `This task is ${task.status}: it takes no new participants and runs no more rounds.`),
        task.status === "COMPLETE" ? h("p", { class: "sub" }, "Its creator and contributors can download the model below, or with:") : "",
        task.status === "COMPLETE" ? copyable("cmd-download", `fedpact model download ${name} --hub ${hub}`) : "");
      return;
    }
    const parts = [h("h2", {}, "Join and participate"),
      h("p", {}, "A data owner runs these commands on the machine that holds the data:"),
      copyable("cmd-login", `fedpact login ${me.name} --hub ${hub}`),
      copyable("cmd-join", `fedpact join ${name}`),
      copyable("cmd-participate", `fedpact participate ${name} --data your-data.csv`),
      h("p", { class: "sub", id: "participate-reads" }, `Your file is read as the definition says: ${label ? `label column "${label}"; ` : ""}${dataPreparation(task.definition.data)} (--label and --missing override it for your file).`)];
    if (creator && !hostedRunning) {
      parts.push(h("p", { class: "sub" }, "The aggregator runs on the hub (the button above) or on your machine:"),
        copyable("cmd-aggregate", `fedpact aggregate ${name}`));
    }
    commandsBox.replaceChildren(...parts);
  }

  async function act(what, opts = {}) {
    box.hidden = true;
    try {
      if (what === "join") {
        const joined = await api.join(name);
        flash(joined.status === "PENDING"
          ? `You asked to join ${name}; its creator has to approve your request.`
          : `You joined ${name}. Run the participate command on your data.`);
      } else if (what === "approve") {
        await api.approve(name, opts.user);
        flash(`${opts.user} may now take part in ${name}.`);
      } else if (what === "decline") {
        await api.decline(name, opts.user);
        flash(`You declined ${opts.user}'s request.`);
      } else if (what === "removeMember") {
        if (!confirm(`Remove ${opts.user} from ${name}? Rounds go on without them from the next one.`)) return;
        await api.removeMember(name, opts.user);
        flash(`${opts.user} was removed from ${name}.`);
      } else if (what === "host") {
        const body = { resume: !!opts.resume };
        const file = document.querySelector("#eval-file") && document.querySelector("#eval-file").files[0];
        if (file) {
          flash(`Uploading ${file.name}\u2026`);
          body.eval_data = { blob: await api.uploadBlob(name, file, undefined, true), format: "csv", label };
        }
        hosted = await api.startHosted(name, body);
      } else if (what === "stop") {
        hosted = await api.stopHosted(name);
        // 202: another hub replica runs it and has not confirmed yet; the page follows its state.
        flash(hosted.state === "stopping"
          ? "The hosted aggregator is stopping: the hub replica that runs it has not confirmed yet."
          : "The hosted aggregator was stopped.");
      } else if (what === "cancel") {
        if (!confirm(`Cancel task ${name}? Its aggregator and participants stop.`)) return;
        await api.cancel(name);
        flash(`Task ${name} was cancelled.`);
      } else if (what === "delete") {
        if (!confirm(`Delete task ${name} with its messages and rounds? Stored models are kept.`)) return;
        await api.remove(name);
        flash(`Task ${name} was deleted.`);
        location.hash = "#/tasks";
        return;
      }
    } catch (err) {
      if (err.status === 401) return;
      showError(box, `Refused: ${err.message}`);
      box.setAttribute("tabindex", "-1");
      box.focus();
    }
    await refresh();
  }

  let lastRounds = "";
  let logOffset;
  async function refresh() {
    try {
      // Rounds and the hosted aggregator are for members; anyone else sees the public description.
      const t = await api.task(name);
      const isMember = t.creator === me.name || t.membership === "ADMITTED";
      const [rounds, hs] = isMember
        ? await Promise.all([api.rounds(name), api.hosted(name)])
        : [{ items: [] }, { state: "none", running: false }];
      task = t;
      const hostedChanged = JSON.stringify(hs) !== JSON.stringify(hosted);
      hosted = hs;
      if (hostedChanged || refresh.lastTask !== JSON.stringify(t)) {
        // Redraw only on change, so a half-typed choice (the eval file) is not thrown away.
        const keep = document.querySelector("#eval-file");
        const file = keep && keep.files && keep.files.length ? keep : null;
        drawTask();
        if (file) document.querySelector("#eval-file")?.replaceWith(file);
        refresh.lastTask = JSON.stringify(t);
      }
      const sig = JSON.stringify(rounds.items);
      if (sig !== lastRounds) {
        lastRounds = sig;
        drawRounds(rounds.items);
      }
      if (isMember && hosted.state !== "none") {
        hostedState.replaceChildren(`State: ${hosted.state}`,
          hosted.started_at ? ` \u00b7 started ${fmtTime(hosted.started_at)} by ${hosted.started_by}` : "",
          hosted.restarts ? ` \u00b7 restarted ${hosted.restarts}\u00d7` : "",
          hosted.reason && !hosted.running ? ` \u00b7 ${hosted.reason}` : "");
        const out = await api.hostedLog(name, logOffset);
        if (logOffset === undefined || out.offset < (logOffset || 0)) hostedLog.textContent = "";
        if (out.text) {
          hostedLog.textContent = (hostedLog.textContent + out.text).slice(-50000);
          hostedLog.scrollTop = hostedLog.scrollHeight;
        }
        logOffset = out.next_offset;
      }
      if (task.status === "COMPLETE" && !modelBox.dataset.loaded) {
        modelBox.dataset.loaded = "1";
        const models = await api.models(name).catch(() => ({ items: [] }));
        const report = models.items.map((m) => (m.metadata || {}).analytics).find((r) => r);
        if (report) {
          modelBox.replaceChildren(analyticsSection(report));
          return;
        }
        modelBox.replaceChildren(h("section", {}, h("h2", {}, "Model"), models.items.length
          ? h("ul", {}, models.items.map((m) => h("li", {}, h("a", { href: `#/model/${m.id}`, id: `model-link-${m.id}` }, `Model ${m.id}`), ` \u2014 ${m.rounds} rounds, ${m.contributors.length} contributors`)))
          : h("p", {}, "The final model is stored on the hub; only the creator and the contributors may see it.")));
      }
    } catch (err) {
      if (err.status === 404) {
        leavePage();
        render(h("h1", {}, "Task not found"), h("p", {}, `There is no task ${name} (any more).`), h("a", { href: "#/tasks" }, "Back to the tasks"));
      }
    }
  }

  function drawRounds(items) {
    roundCount.textContent = items.length ? `${items.filter((r) => r.status === "complete").length} of ${task.definition.rounds} rounds complete` : "No round has run yet.";
    roundsBody.replaceChildren(...items.map((r) => {
      const m = r.metrics || {};
      return h("tr", { dataset: { round: r.number } },
        h("td", {}, r.number), h("td", {}, r.status), h("td", {}, (r.participants || []).join(", ")),
        h("td", { class: "num" }, fmtNum(m.train_loss)), h("td", { class: "num" }, fmtNum(m.train_accuracy)),
        h("td", { class: "num" }, fmtNum(m.val_accuracy)), h("td", { class: "num" }, fmtNum(m.eval_accuracy)));
    }));
    if (!chart) return;
    chart.data.labels = items.map((r) => r.number);
    chart.data.datasets = SERIES.filter(([key]) => items.some((r) => typeof (r.metrics || {})[key] === "number")).map(([key, text, axis]) => {
      const color = COLORS[SERIES.findIndex(([k]) => k === key)];
      return { label: text, data: items.map((r) => (r.metrics || {})[key] ?? null), yAxisID: axis, borderColor: color, backgroundColor: color, spanGaps: true, borderDash: axis === "y" ? [5, 3] : [] };
    });
    chart.options.scales.y2.display = chart.data.datasets.some((d) => d.yAxisID === "y2");
    Object.assign(chart.options.scales.y1, accuracyRange(chart.data.datasets.filter((d) => d.yAxisID === "y1")));
    chart.update();
  }

  drawTask();
  await refresh();
  every(1500, () => {
    if (task.status === "CREATED" || task.status === "RUNNING" || (hosted && hosted.running)) refresh();
  });
}

// ---------------------------------------------------------------------------------------
// Model page
// "hidden: 64, dropout: 0.2" rather than {"hidden":[64],"dropout":0.2}.
function fmtParams(params) {
  const entries = Object.entries(params || {});
  return entries.map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(" \u00d7 ") : v}`).join(", ");
}

async function pageModel(_params, id) {
  const [model, card] = await Promise.all([api.model(id), api.modelCard(id)]);
  const md = model.metadata || {};
  const box = errorBox("model-error");
  const download = h("button", { type: "button", class: "primary", id: "btn-download" }, "Download model (safetensors)");
  download.addEventListener("click", async () => {
    try {
      const resp = await api.downloadModel(id);
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: `${model.task_name}-model-${model.id}.safetensors`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      showError(box, err);
    }
  });
  const metrics = Object.entries(model.metrics || {}).filter(([, v]) => typeof v === "number");
  const info = [
    ["Task", model.task_id ? h("a", { href: `#/task/${encodeURIComponent(model.task_name)}` }, model.task_name) : `${model.task_name} (deleted)`],
    ["Stored", fmtTime(model.created_at)], ["Rounds", model.rounds], ["Converged", md.converged ? "yes" : "no"],
    ["Model", `${card.definition.model.name}${fmtParams(card.definition.model.params) ? ` (${fmtParams(card.definition.model.params)})` : ""}`],
    ["Algorithm", `${card.definition.algorithm.name}${fmtParams(card.definition.algorithm.params) ? ` (${fmtParams(card.definition.algorithm.params)})` : ""}`],
    ["Privacy", `${card.privacy.mode}${card.privacy.epsilon !== undefined ? `, \u03b5 = ${fmtNum(card.privacy.epsilon)}, \u03b4 = ${card.privacy.delta}` : ""}`],
    ["Standardised features", md.standardized ? "yes" : "no"],
    ["Licence", card.licence || "not set by the creator"],
    ["Size", `${(model.size / 1024).toFixed(1)} KiB`], ["SHA-256", h("code", { class: "hash" }, model.sha256)],
  ];
  const schema = card.data_schema || {};
  const schemaRows = [
    ["Kind", schema.kind], ["Features", Array.isArray(schema.features) ? schema.features.join(", ") : (schema.features ?? (schema.shape || []).join(" \u00d7 "))],
    ["Label column", schema.label], ["Classes", (schema.classes || []).join(", ")],
  ];
  const roundRows = card.rounds.map((r) => h("tr", {}, h("td", { class: "num" }, r.number), h("td", {}, r.status),
    h("td", {}, r.participants.join(", ")), h("td", { class: "num" }, fmtNum(r.metrics.train_loss)),
    h("td", { class: "num" }, fmtNum(r.metrics.val_accuracy)), h("td", { class: "num" }, fmtNum(r.metrics.eval_accuracy)),
    h("td", {}, r.global_model_sha256 ? h("code", { class: "hash", title: r.global_model_sha256 }, `${r.global_model_sha256.slice(0, 12)}\u2026`) : "")));
  const nodes = [
    h("div", { class: "page-head" }, h("h1", {}, `Model ${model.id} of ${model.task_name}`), download), box,
    h("section", { id: "model-card" }, h("h2", {}, "Model card"),
      h("p", { id: "card-description", class: "description" }, card.description || "No description."),
      h("p", { class: "sub" }, "The card as JSON: ", h("code", {}, `GET /api/v1/models/${model.id}/card`), " or ", h("code", {}, `fedpact model card ${model.id}`))),
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "About"), h("dl", { class: "summary", id: "model-summary" }, info.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        h("h2", {}, "Data schema"), h("dl", { class: "summary", id: "model-schema" }, schemaRows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v ?? ""))]))),
      h("section", {}, h("h2", {}, "Contributors"), h("ul", { id: "contributors" }, model.contributors.map((c) => h("li", {}, c))),
        h("h2", {}, "Final metrics"), metrics.length
          ? h("table", { class: "metrics" }, h("tbody", {}, metrics.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "num" }, fmtNum(v))))))
          : h("p", {}, "No metrics recorded."))),
    h("section", {}, h("h2", {}, "Rounds"), card.rounds.length
      ? h("div", { class: "scroll" }, h("table", { class: "rounds", id: "card-rounds" },
          h("thead", {}, h("tr", {}, ["Round", "Status", "Participants", "Train loss", "Hold-out accuracy", "Eval accuracy", "Global model SHA-256"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, roundRows)))
      : h("p", { class: "sub" }, "The task was deleted; its rounds are no longer on the hub.")),
  ];
  const cm = md.confusion_matrix;
  const task = (md.data && md.data.task) || "classification";
  const preview = previewSection(md.preview);
  if (preview) nodes.push(preview.section);
  if (task !== "classification") {
    if (!preview) nodes.push(h("section", {}, h("h2", {}, "Preview"), h("p", { class: "sub", id: "preview-missing" }, "Not available: the aggregator had no evaluation data of its own to draw the model on.")));
  } else if (Array.isArray(cm) && cm.length) {
    const classes = (md.data && md.data.classes) || cm.map((_, i) => i);
    const max = Math.max(1, ...cm.flat());
    const total = cm.flat().reduce((a, b) => a + b, 0);
    const correct = cm.reduce((a, row, i) => a + (row[i] || 0), 0);
    const table = h("table", { class: "confusion", id: "confusion-matrix" },
      h("caption", {}, `Rows: true class; columns: predicted class. ${correct} of ${total} evaluation samples correct (${total ? ((100 * correct) / total).toFixed(1) : 0}%).`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "true \\ predicted"), classes.map((c) => h("th", { scope: "col" }, String(c))))),
      h("tbody", {}, cm.map((row, i) => h("tr", {}, h("th", { scope: "row" }, String(classes[i])), row.map((v, j) => {
        const td = h("td", { class: i === j ? "diag num" : "num" }, String(v));
        const a = v / max;
        td.style.backgroundColor = i === j ? `rgba(39, 174, 96, ${0.1 + 0.6 * a})` : v ? `rgba(192, 57, 43, ${0.15 + 0.6 * a})` : "";
        return td;
      })))));
    nodes.push(h("section", {}, h("h2", {}, "Confusion matrix on the aggregator's evaluation data"), h("div", { class: "scroll" }, table)));
  } else {
    nodes.push(h("section", {}, h("h2", {}, "Confusion matrix"), h("p", { class: "sub" }, "Not available: the aggregator had no evaluation data of its own. The metrics above come from the participants' hold-out data.")));
  }
  render(...nodes);
  if (preview) preview.draw();
}

const PREVIEW_COLOURS = ["#2e86de", "#e67e22", "#27ae60", "#c0392b", "#8e44ad", "#16a085", "#d35400", "#7f8c8d", "#f1c40f", "#2c3e50"];

// An analytics task's report (metadata.analytics of its stored result, docs/api.md): one table
// per column with its figures, quantiles and histogram counts.
function analyticsSection(report) {
  const fmt = (v) => (v === null || v === undefined ? "\u2014" : typeof v === "number" ? String(Number(v.toPrecision(6))) : String(v));
  const tables = Object.entries(report).map(([column, r], i) => {
    // Under secure aggregation no site's extremes are known: min and max bound the outermost non-empty bins.
    const bound = r.range_from === "histogram" ? " (bin bound)" : "";
    const rows = [["count", r.count], ["missing", r.missing], ["mean", r.mean], ["std", r.std], ["variance", r.variance],
      ["min" + bound, r.min], ["max" + bound, r.max],
      ...Object.entries(r.quantiles || {}).map(([q, v]) => [`quantile ${q}`, v])];
    const hist = r.histogram || { edges: [], counts: [] };
    const bins = hist.counts.map((c, j) => h("tr", {}, h("td", {}, `[${fmt(hist.edges[j])}, ${fmt(hist.edges[j + 1])})`), h("td", {}, fmt(c))));
    return h("div", { class: "analytics-column", id: `analytics-${i}` },
      h("h3", {}, column),
      h("table", { class: "analytics" }, h("tbody", {}, ...rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmt(v)))))),
      h("table", { class: "analytics-histogram" },
        h("thead", {}, h("tr", {}, h("th", {}, "bin"), h("th", {}, "count"))),
        h("tbody", {}, ...bins,
          h("tr", {}, h("td", {}, "below the first edge"), h("td", {}, fmt(hist.below))),
          h("tr", {}, h("td", {}, "above the last edge"), h("td", {}, fmt(hist.above))))));
  });
  return h("section", { id: "analytics-report" }, h("h2", {}, "Analytics report"),
    h("p", { class: "sub" }, "Figures over all participants' rows; only per-column sums, counts and histogram counts travelled. Also: ",
      h("code", {}, "Client.analytics_report(task)"), "."), ...tables);
}

// The final model's metadata.preview (docs/algorithms.md "Model preview"): clusters on their
// first two principal components, or predicted against true values for regression.
function previewSection(pv) {
  if (!pv || !Array.isArray(pv.points) || !pv.points.length || !["clustering", "regression"].includes(pv.kind)) return null;
  const axes = Array.isArray(pv.axes) && pv.axes.length === 2 ? pv.axes.map(String) : ["x", "y"];
  const clustering = pv.kind === "clustering";
  const title = clustering ? "Clusters on the first two principal components" : "Predicted against true values";
  const canvas = h("canvas", { id: "preview-chart", role: "img", "aria-label": title });
  const caption = h("p", { class: "sub", id: "preview-caption" },
    `${pv.points.length} of ${pv.total || pv.points.length} evaluation samples of the aggregator's own data.`);
  const section = h("section", { id: "preview" }, h("h2", {}, title), caption, h("div", { class: "chart" }, canvas));
  function datasets() {
    if (clustering) {
      const groups = new Map();
      for (const [x, y, c] of pv.points) {
        if (!groups.has(c)) groups.set(c, []);
        groups.get(c).push({ x, y });
      }
      const sets = [...groups.entries()].sort((a, b) => a[0] - b[0]).map(([c, pts]) => ({
        label: `cluster ${c}`, data: pts, pointRadius: 3, backgroundColor: PREVIEW_COLOURS[c % PREVIEW_COLOURS.length],
      }));
      if (Array.isArray(pv.centroids)) {
        sets.push({ label: "centroids", data: pv.centroids.map(([x, y]) => ({ x, y })), pointStyle: "crossRot",
          pointRadius: 10, borderWidth: 3, borderColor: "#000", backgroundColor: "#000" });
      }
      return sets;
    }
    const values = pv.points.flat();
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    return [
      { label: "samples", data: pv.points.map(([x, y]) => ({ x, y })), pointRadius: 3, backgroundColor: PREVIEW_COLOURS[0] },
      { type: "line", label: "perfect fit", data: [{ x: lo, y: lo }, { x: hi, y: hi }], borderColor: "#7f8c8d", borderDash: [6, 4], pointRadius: 0, fill: false },
    ];
  }
  function draw() {
    if (!window.Chart) return;
    const chart = new window.Chart(canvas, {
      type: "scatter",
      data: { datasets: datasets() },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { labels: { boxWidth: 14, boxHeight: 8 } } },
        scales: { x: { type: "linear", title: { display: true, text: axes[0] } }, y: { type: "linear", title: { display: true, text: axes[1] } } },
      },
    });
    pageCharts.push(chart);
  }
  return { section, draw };
}

window.addEventListener("hashchange", route);
route();
