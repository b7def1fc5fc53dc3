// keysafe web components: <keysafe-secrets-panel> and <keysafe-secret-card>.
//
// One standalone ES module, no dependencies, no build step. A host page (plain HTML,
// React, Vue, ...) loads it from its keysafe server and passes its own credential:
//
//   <script type="module" src="https://keysafe.example.com/ui/keysafe-components.js"></script>
//   <keysafe-secrets-panel organization="acme-corp" domain="card-services"
//                          api-base="https://keysafe.example.com"></keysafe-secrets-panel>
//   panel.credentials = async () => hostSession.accessToken;   // or: panel.token = "ks_..."
//
// Blind write: a value typed into a card goes to the server once and is never shown,
// pre-filled or kept: the password field is cleared before the request is sent, and
// no response carries a value. The credential is a property, never an attribute, so
// it never appears in the DOM.

const CSS = `
:host { display: block; font: inherit; color: #1a1d21; --ks-accent: #0b57d0;
  --ks-ok: #146c2e; --ks-warn: #8a4b00; --ks-bad: #b3261e; --ks-muted: #4a5058;
  --ks-line: #c4c9d0; --ks-bg: #ffffff; --ks-soft: #f2f4f7; }
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .75rem; }
h3 { font-size: 1rem; margin: 0; overflow-wrap: anywhere; }
p { margin: .4rem 0; }
.card { background: var(--ks-bg); border: 1px solid var(--ks-line); border-radius: 8px;
  padding: .9rem 1rem; display: flex; flex-direction: column; gap: .35rem; height: 100%; }
.head { display: flex; justify-content: space-between; align-items: flex-start; gap: .5rem;
  flex-wrap: wrap; }
.name { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .8rem; color: var(--ks-muted); overflow-wrap: anywhere; }
.desc { color: var(--ks-muted); font-size: .9rem; }
.badges { display: flex; gap: .3rem; flex-wrap: wrap; }
.badge { display: inline-block; border-radius: 999px; padding: .1rem .55rem; font-size: .78rem;
  font-weight: 600; border: 1px solid currentColor; white-space: nowrap; }
.badge.ok { color: var(--ks-ok); } .badge.off { color: var(--ks-muted); }
.badge.warn { color: var(--ks-warn); } .badge.bad { color: var(--ks-bad); }
.meta { font-size: .82rem; color: var(--ks-muted); margin: 0; }
.actions, .buttons { display: flex; flex-wrap: wrap; gap: .4rem; margin-top: .35rem; }
button { font: inherit; font-size: .9rem; min-height: 2.25rem; padding: .3rem .8rem;
  border-radius: 6px; border: 1px solid var(--ks-accent); background: var(--ks-bg);
  color: var(--ks-accent); cursor: pointer; }
button.primary { background: var(--ks-accent); color: #fff; }
button.danger { border-color: var(--ks-bad); color: var(--ks-bad); }
button.danger.primary { background: var(--ks-bad); color: #fff; }
button:disabled { opacity: .55; cursor: not-allowed; }
button:focus-visible, input:focus-visible, select:focus-visible, a:focus-visible {
  outline: 3px solid #174ea6; outline-offset: 2px; }
label { font-weight: 600; font-size: .88rem; display: block; margin: .3rem 0 .2rem; }
.check label { display: inline; font-weight: 400; }
input[type=password], input[type=text], input[type=search], textarea {
  font: inherit; width: 100%; min-height: 2.25rem; padding: .35rem .5rem;
  border: 1px solid #6b7280; border-radius: 6px; background: #fff; color: inherit; }
input[aria-invalid=true] { border-color: var(--ks-bad); border-width: 2px; }
.hint { font-size: .8rem; color: var(--ks-muted); }
.field-error { color: var(--ks-bad); font-size: .85rem; font-weight: 600; }
.form, .confirm { border-top: 1px dashed var(--ks-line); margin-top: .4rem; padding-top: .4rem; }
.body { display: flex; flex-direction: column; gap: .35rem; }
.status-msg { font-size: .85rem; color: var(--ks-ok); margin: 0; }
.status-msg.bad { color: var(--ks-bad); }
.error-box { border: 2px solid var(--ks-bad); border-radius: 8px; padding: .75rem 1rem;
  color: var(--ks-bad); background: #fff5f4; }
.notice { border: 1px solid var(--ks-line); border-radius: 8px; padding: .5rem .8rem;
  background: var(--ks-soft); font-size: .9rem; }
table { border-collapse: collapse; width: 100%; font-size: .82rem; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; }
th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid var(--ks-line); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(19rem, 100%), 1fr));
  gap: .8rem; list-style: none; padding: 0; margin: 0; }
.toolbar { display: flex; flex-wrap: wrap; gap: .6rem; align-items: end; }
.toolbar > div { flex: 1 1 14rem; }
.tags { display: flex; flex-wrap: wrap; gap: .3rem; list-style: none; padding: 0; margin: 0; }
.tag { font-size: .76rem; background: var(--ks-soft); border: 1px solid var(--ks-line);
  border-radius: 4px; padding: 0 .4rem; overflow-wrap: anywhere; }
.tags-edit td { padding: .2rem .2rem; }
.tags-edit input[readonly] { background: var(--ks-soft); }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; }
[hidden] { display: none !important; }
@media (max-width: 480px) { .card { padding: .75rem; } button { flex: 1 1 auto; } }
`;

let sheet = null;
function styles() {
  if (!sheet) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
  }
  return sheet;
}

/** A DOM element from a tag, properties and children. Text is always text (no HTML). */
export function h(tag, props = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : fmt.format(d);
}

/** An error from the keysafe API (problem+json), or status 0 when it could not be reached. */
export class KeysafeError extends Error {
  constructor(status, code, detail, body = null) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
  }
}

/** The keysafe HTTP API with a host-provided credential (a token or a JWT). */
export class KeysafeClient {
  constructor(apiBase, credentials) {
    this.base = String(apiBase || '').replace(/\/+$/, '');
    this.credentials = credentials; // () => string | Promise<string>
    this.catalogPromise = null;
    this.whoamiPromise = null;
  }

  async request(method, path, { query = null, body } = {}) {
    // Serialised before the first await: callers drop their reference to a value as
    // soon as this returns its promise.
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const token = this.credentials ? await this.credentials() : null;
    if (!token) throw new KeysafeError(401, 'unauthorized', 'not signed in: no credential');
    let url = this.base + path;
    if (query) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== '') qs.set(k, String(v));
      const s = qs.toString();
      if (s) url += '?' + s;
    }
    const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
    const init = { method, headers, credentials: 'omit', cache: 'no-store', mode: 'cors',
      referrerPolicy: 'no-referrer', redirect: 'error' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = payload;
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch {
      const where = this.base || location.origin;
      throw new KeysafeError(0, 'unreachable', `Cannot reach keysafe at ${where}: the server ` +
        `is down, or it does not accept requests from this page's origin (${location.origin}); ` +
        'its KEYSAFE_CORS_ORIGINS setting must list this origin.');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const detail = (data && data.detail) || `HTTP ${res.status}`;
      throw new KeysafeError(res.status, (data && data.code) || `http_${res.status}`, detail, data);
    }
    return data;
  }

  secretPath(org, name, tail = '') {
    return `/api/secrets/${encodeURIComponent(org)}/${encodeURIComponent(name)}${tail}`;
  }

  whoami() {
    if (!this.whoamiPromise) {
      this.whoamiPromise = this.request('GET', '/api/whoami');
      this.whoamiPromise.catch(() => { this.whoamiPromise = null; });
    }
    return this.whoamiPromise;
  }
  catalog() {
    if (!this.catalogPromise) {
      this.catalogPromise = this.request('GET', '/api/catalog');
      this.catalogPromise.catch(() => { this.catalogPromise = null; });
    }
    return this.catalogPromise;
  }
  orgs() { return this.request('GET', '/api/orgs'); }
  list(org, domain) {
    return this.request('GET', `/api/orgs/${encodeURIComponent(org)}/secrets`,
      { query: { domain_id: domain, include_deleted: 'true' } });
  }
  status(org, name, domain) {
    return this.request('GET', this.secretPath(org, name), { query: { domain_id: domain } });
  }
  put(org, name, body) { return this.request('PUT', this.secretPath(org, name), { body }); }
  patch(org, name, body) { return this.request('PATCH', this.secretPath(org, name), { body }); }
  patchFields(org, name, body) {
    return this.request('PATCH', this.secretPath(org, name, '/fields'), { body });
  }
  remove(org, name, domain) {
    return this.request('DELETE', this.secretPath(org, name), { query: { domain_id: domain } });
  }
  restore(org, name, domain) {
    return this.request('POST', this.secretPath(org, name, '/restore'), { query: { domain_id: domain } });
  }
  versions(org, name, domain) {
    return this.request('GET', this.secretPath(org, name, '/versions'), { query: { domain_id: domain } });
  }
  rotate(org, name, domain) {
    return this.request('POST', this.secretPath(org, name, '/rotate'), { query: { domain_id: domain } });
  }
  rollback(org, name, body) { return this.request('POST', this.secretPath(org, name, '/rollback'), { body }); }
  destroy(org, name, body) { return this.request('POST', this.secretPath(org, name, '/destroy'), { body }); }
  checkStored(org, name, domain) {
    return this.request('POST', this.secretPath(org, name, '/check'), { query: { domain_id: domain } });
  }
  audit(params) { return this.request('GET', '/api/audit', { query: params }); }
  accessReport(params) { return this.request('GET', '/api/audit/report', { query: params }); }
  tokens() { return this.request('GET', '/api/tokens'); }
  createToken(body) { return this.request('POST', '/api/tokens', { body }); }
  revokeToken(id) { return this.request('DELETE', `/api/tokens/${encodeURIComponent(id)}`); }
}

// -- input checks (the server checks again on every write) --------------------------

function article(phrase) {
  if (!phrase) return 'a';
  const first = phrase[0];
  const initialism = phrase.length > 1 && /[A-Z0-9]/.test(phrase[1]);
  if (initialism) return 'AEFHILMNORSX'.includes(first.toUpperCase()) ? 'an' : 'a';
  return 'aeiou'.includes(first.toLowerCase()) ? 'an' : 'a';
}

function compile(pattern) {
  for (const flags of ['u', '']) {
    try { return new RegExp(`^(?:${pattern})$`, flags); } catch { /* try the next */ }
  }
  return null; // not expressible in JavaScript: the server still checks it
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A secret name the server accepts, or a message naming the problem. */
export function checkName(name) {
  if (!name) return 'Enter a name';
  if (name.length > 128) return `The name is ${name.length} characters long; the limit is 128`;
  if (!NAME_RE.test(name)) return 'Use letters, digits, ".", "_" and "-", starting with a letter or digit';
  return null;
}

/** null when ``value`` may be sent, else a message that never quotes the value. */
export function checkValue(entry, value, limits) {
  if (!value || !value.trim()) return 'Enter a value: this field is empty';
  const max = (limits && limits.max_value_bytes) || 65536;
  const size = new TextEncoder().encode(value).length;
  if (size > max) return `The value is ${size} bytes; the limit is ${max}`;
  if (!entry) return null;
  const s = value.trim();
  const dn = entry.display_name || entry.secret_name;
  if (entry.placeholder && s === entry.placeholder.trim()) {
    return `This is the ${dn} example placeholder, not a real value`;
  }
  if (entry.pattern) {
    const re = compile(entry.pattern);
    if (re && !re.test(s)) {
      const msg = `This does not look like ${article(dn)} ${dn}`;
      return entry.format_hint ? `${msg} (${entry.format_hint})` : msg;
    }
  }
  const fields = entry.json_fields || [];
  if (fields.length) {
    const expected = `${dn}: expected a JSON object with the fields ${fields.join(', ')}`;
    let data;
    try { data = JSON.parse(s); } catch { return expected; }
    if (!data || typeof data !== 'object' || Array.isArray(data)) return expected;
    const missing = fields.filter((f) => !(f in data));
    if (missing.length) return `${dn}: missing the field(s) ${missing.join(', ')}`;
    const empty = fields.filter((f) => data[f] === null || data[f] === '' ||
      (typeof data[f] === 'object' && Object.keys(data[f]).length === 0));
    if (empty.length) return `${dn}: empty field(s) ${empty.join(', ')}`;
  }
  return null;
}

/** Whether a token's scopes cover a secret name in this org and domain: every name,
 * unless its only scopes here name secrets (``org/domain/name``, ``*`` and ``?``). */
function namesCovered(orgs, org, domain) {
  if (!orgs) return () => true;
  if (orgs.includes(org) || orgs.includes(`${org}/${domain}`)) return () => true;
  const prefix = `${org}/${domain}/`;
  const pats = orgs.filter((o) => o.startsWith(prefix)).map((o) => new RegExp(
    `^${o.slice(prefix.length).replace(/[.+^${}()|[\]\\-]/g, '\\$&')
      .replace(/\*/g, '.*').replace(/\?/g, '.')}$`));
  return pats.length ? (name) => pats.some((re) => re.test(name)) : () => true;
}

function userMessage(err) {
  if (err instanceof KeysafeError) {
    if (err.status === 401) return 'Your session has expired or the credential was rejected: sign in again.';
    if (err.status === 403) return `Not allowed: ${err.detail}`;
    return err.detail;
  }
  return 'Unexpected error: ' + (err && err.message ? err.message : String(err));
}

function announceUnauthorized(el, err) {
  if (err instanceof KeysafeError && err.status === 401) {
    el.dispatchEvent(new CustomEvent('keysafe-unauthorized', { bubbles: true, composed: true,
      detail: { message: userMessage(err) } }));
  }
}

let uid = 0;

/** A host may set ``token`` or ``credentials`` before this module has loaded: such an
 * own property would hide the class's setter, so it is moved onto the setter. */
function upgradeProperties(el) {
  for (const prop of ['credentials', 'token']) {
    if (Object.prototype.hasOwnProperty.call(el, prop)) {
      const value = el[prop];
      delete el[prop];
      el[prop] = value;
    }
  }
}

// -- <keysafe-secret-card> -----------------------------------------------------------

/**
 * One secret: status, add / rotate (blind write), delete and restore, history.
 * Attributes: organization, domain, secret-name, display-name, description,
 * placeholder, api-base. Properties: token, credentials (a function returning the
 * credential). Inside <keysafe-secrets-panel> the panel hands it everything it needs.
 */
export class KeysafeSecretCard extends HTMLElement {
  static observedAttributes = ['organization', 'domain', 'secret-name', 'display-name',
    'description', 'placeholder', 'api-base'];

  #root;
  #credentials = null;
  #client = null;
  #managed = false;
  #ident = null; // permissions of the caller
  #entry = null; // catalog entry, if any
  #limits = null;
  #status = null;
  #error = null;
  #mode = 'idle'; // idle | edit | details | rotate | delete | history
  #history = null;
  #tagSeq = 0;
  #armed = null; // the version a first "Destroy" click armed
  #message = null;
  #busy = false;
  #id = `ks${++uid}`;
  #seq = 0;

  #body;
  #live;

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: 'open' });
    this.#root.adoptedStyleSheets = [styles()];
    // The card and its live region persist; only the card's body is re-rendered, so
    // screen readers announce each new message.
    this.#body = h('div', { class: 'body' });
    this.#live = h('p', { class: 'status-msg', role: 'status', 'aria-live': 'polite' });
    this.#root.append(h('article', { class: 'card', 'aria-labelledby': `${this.#id}-title` },
      this.#body, this.#live));
  }

  set token(value) { this.credentials = value ? () => value : null; }
  set credentials(fn) {
    this.#credentials = typeof fn === 'function' ? fn : null;
    this.#client = null;
    if (this.isConnected && !this.#managed) this.refresh();
  }

  get org() { return this.getAttribute('organization') || ''; }
  get domain() { return this.getAttribute('domain') || ''; }
  get secretName() { return this.getAttribute('secret-name') || ''; }

  /** Used by the panel: shared client, identity, catalog entry and status. */
  setup({ client, identity, entry, limits, status }) {
    this.#managed = true;
    this.#client = client;
    this.#ident = identity;
    this.#entry = entry || null;
    this.#limits = limits;
    this.#status = status || null;
    this.#error = null;
    if (this.isConnected) this.#render();
  }

  connectedCallback() {
    upgradeProperties(this);
    if (this.#managed) this.#render();
    else this.refresh();
  }

  attributeChangedCallback(_name, old, value) {
    if (old !== value && this.isConnected && !this.#managed) this.refresh();
  }

  #api() {
    if (!this.#client) {
      this.#client = new KeysafeClient(this.getAttribute('api-base') || '', this.#credentials);
    }
    return this.#client;
  }

  /** Reloads the status (and, standalone, the caller's identity and the catalog). */
  async refresh() {
    const seq = ++this.#seq;
    if (!this.#managed && !this.#credentials) {
      this.#error = null;
      this.#status = null;
      this.#render('Waiting for a credential from the host page.');
      return;
    }
    if (!this.org || !this.secretName) {
      this.#error = 'This card needs the organization and secret-name attributes.';
      this.#render();
      return;
    }
    try {
      const api = this.#api();
      if (!this.#managed) {
        const [ident, cat] = await Promise.all([api.whoami(), api.catalog()]);
        this.#ident = ident;
        this.#limits = cat;
        this.#entry = findEntry(cat, this.secretName);
      }
      const status = await api.status(this.org, this.secretName, this.domain || undefined);
      if (seq !== this.#seq) return;
      this.#status = status;
      this.#error = null;
    } catch (err) {
      if (seq !== this.#seq) return;
      this.#error = userMessage(err);
      this.#status = null;
      announceUnauthorized(this, err);
    }
    this.#render();
  }

  #can(perm) { return !!(this.#ident && (this.#ident.permissions || []).includes(perm)); }

  #title() {
    return this.getAttribute('display-name') || (this.#entry && this.#entry.display_name) ||
      (this.#status && this.#status.display_name) || this.secretName;
  }

  #render(waiting = null) {
    const id = this.#id;
    const title = this.#title();
    const card = new DocumentFragment();
    const s = this.#status;
    const badges = h('div', { class: 'badges' });
    if (s && s.deleted) badges.append(h('span', { class: 'badge warn', text: 'Deleted' }));
    else if (s && s.configured) badges.append(h('span', { class: 'badge ok', text: 'Configured' }));
    else if (s) badges.append(h('span', { class: 'badge off', text: 'Not configured' }));
    if (s && s.configured && s.exposed) {
      badges.append(h('span', { class: 'badge bad', text: 'Exposed' }));
    } else if (s && s.configured && s.rotation_overdue) {
      badges.append(h('span', { class: 'badge bad', text: 'Rotation overdue' }));
    }
    const left = s && s.configured && s.expires_at ? Date.parse(s.expires_at) - Date.now() : null;
    if (left !== null && left <= 0) badges.append(h('span', { class: 'badge bad', text: 'Expired' }));
    else if (left !== null && left <= 7 * 86400000) badges.append(h('span', { class: 'badge warn', text: 'Expires soon' }));
    card.append(h('div', { class: 'head' },
      h('div', {}, h('h3', { id: `${id}-title`, text: title }),
        h('div', { class: 'name', text: this.secretName })),
      badges));
    const desc = this.getAttribute('description') || (s && s.description) ||
      (this.#entry && this.#entry.description);
    if (desc) card.append(h('p', { class: 'desc', text: desc }));
    if (waiting) card.append(h('p', { class: 'notice', text: waiting }));
    if (this.#error) {
      card.append(h('div', { class: 'error-box', role: 'alert' },
        h('p', { text: this.#error }),
        h('button', { type: 'button', onclick: () => this.refresh(), text: 'Retry' })));
    } else if (!s && !waiting) {
      card.append(h('p', { class: 'meta', text: 'Loading status…' }));
    }
    if (s) {
      card.append(this.#meta(s));
      card.append(this.#actions(s));
      if (this.#mode === 'edit') card.append(this.#form(s));
      if (this.#mode === 'details') card.append(this.#detailsForm(s));
      if (this.#mode === 'delete') card.append(this.#confirmDelete(s));
      if (this.#mode === 'rotate') card.append(this.#confirmRotate(s));
      if (this.#mode === 'history') card.append(this.#historyView());
    }
    this.#body.replaceChildren(card);
    const text = this.#message ? this.#message.text : '';
    if (this.#live.textContent !== text) this.#live.textContent = text;
    this.#live.classList.toggle('bad', !!(this.#message && this.#message.bad));
  }

  #meta(s) {
    const parts = [];
    if (s.configured || s.deleted) {
      parts.push(`Version ${s.version}`);
      if (s.updated_at) parts.push(`updated ${when(s.updated_at)}${s.updated_by ? ' by ' + s.updated_by : ''}`);
      if (s.deleted && s.recoverable_until) parts.push(`restorable until ${when(s.recoverable_until)}`);
      if (s.configured && s.exposed) {
        const where = (s.tags || {}).exposed;
        parts.push(`exposed${where ? ' in ' + where : ''}: rotate it`);
      } else if (s.configured && s.rotation_due) {
        const days = Math.ceil((new Date(s.rotation_due) - Date.now()) / 86400000);
        parts.push(s.rotation_overdue ? `rotation overdue since ${when(s.rotation_due)}`
          : `rotation due in ${days} day${days === 1 ? '' : 's'}`);
      }
      if (s.configured && s.expires_at) {
        parts.push(`${Date.parse(s.expires_at) <= Date.now() ? 'expired' : 'expires'} ${when(s.expires_at)}`);
      }
    } else {
      parts.push('No value stored' + (s.domain_id ? ` for domain ${s.domain_id}` : ''));
    }
    const meta = h('p', { class: 'meta', text: parts.join(' · ') });
    const tags = Object.entries(s.tags || {});
    if (!tags.length || !(s.configured || s.deleted)) return meta;
    const list = h('ul', { class: 'tags', 'aria-label': 'Tags' },
      tags.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) =>
        h('li', { class: 'tag', text: v ? `${k}: ${v}` : k })));
    const box = new DocumentFragment();
    box.append(meta, list);
    return box;
  }

  #actions(s) {
    const id = this.#id;
    const bar = h('div', { class: 'actions' });
    const busy = this.#busy;
    if (this.#can('write') && !s.deleted) {
      bar.append(h('button', { type: 'button', class: 'primary', id: `${id}-edit`,
        'aria-expanded': String(this.#mode === 'edit'), 'aria-controls': `${id}-form`,
        disabled: busy, onclick: () => this.#toggle('edit'),
        text: s.configured ? 'Rotate key' : 'Add key' }));
    }
    if (s.deleted && this.#can('restore')) {
      const gone = s.recoverable_until && new Date(s.recoverable_until) < new Date();
      bar.append(h('button', { type: 'button', class: 'primary', id: `${id}-restore`,
        disabled: busy || gone, onclick: () => this.#restore(), text: 'Restore' }));
    }
    if (s.configured && !s.deleted && this.#can('write') && this.#entry
        && this.#entry.live_check) {
      // Spec 004: verify the stored key still works (the key never reaches the page).
      bar.append(h('button', { type: 'button', id: `${id}-check-stored`, disabled: busy,
        onclick: () => this.#checkStored(), text: 'Check key' }));
    }
    if (s.configured && !s.deleted && this.#can('write') && s.rotator && s.rotator !== 'manual') {
      // keysafe (or the configured rotator) makes the new value: nobody pastes or sees it.
      bar.append(h('button', { type: 'button', id: `${id}-rotate-now`,
        'aria-expanded': String(this.#mode === 'rotate'), 'aria-controls': `${id}-rot`,
        disabled: busy, onclick: () => this.#toggle('rotate'), text: 'Rotate now' }));
    }
    if (s.configured && !s.deleted && this.#can('write')) {
      bar.append(h('button', { type: 'button', id: `${id}-details`,
        'aria-expanded': String(this.#mode === 'details'), 'aria-controls': `${id}-det`,
        disabled: busy, onclick: () => this.#toggle('details'), text: 'Details' }));
    }
    if ((s.configured || s.deleted) && this.#can('versions')) {
      bar.append(h('button', { type: 'button', id: `${id}-history`,
        'aria-expanded': String(this.#mode === 'history'), 'aria-controls': `${id}-hist`,
        disabled: busy, onclick: () => this.#toggle('history'), text: 'History' }));
    }
    if (s.configured && this.#can('delete')) {
      bar.append(h('button', { type: 'button', class: 'danger', id: `${id}-delete`,
        'aria-expanded': String(this.#mode === 'delete'), 'aria-controls': `${id}-del`,
        disabled: busy, onclick: () => this.#toggle('delete'), text: 'Delete' }));
    }
    return bar;
  }

  #toggle(mode) {
    this.#mode = this.#mode === mode ? 'idle' : mode;
    this.#message = null;
    this.#armed = null;
    if (this.#mode === 'history') {
      this.#history = null;
      this.#loadHistory();
    }
    this.#render();
    const focus = { edit: `${this.#id}-value`, details: `${this.#id}-desc`,
      rotate: `${this.#id}-rot-cancel`, delete: `${this.#id}-del-cancel`,
      history: `${this.#id}-hist` }[this.#mode];
    const back = { edit: 'edit', details: 'details', rotate: 'rotate-now', delete: 'delete',
      history: 'history' }[mode];
    const target = this.#root.getElementById(focus || `${this.#id}-${back}`);
    if (target) target.focus();
  }

  /** The JSON credential's fields (one password field each), or none: one value. */
  #jsonFields() { return (this.#entry && this.#entry.json_fields) || []; }

  #form(s) {
    const id = this.#id;
    const entry = this.#entry;
    const overwrite = !!s.configured;
    const fields = this.#jsonFields();
    const secret = (fid, name, label, extra = {}) => {
      const input = h('input', { id: fid, name, type: 'password', autocomplete: 'off',
        spellcheck: 'false', autocapitalize: 'off', 'aria-describedby': `${id}-hint ${id}-err`,
        ...extra });
      input.value = ''; // never pre-filled
      return [h('label', { for: fid, text: label }), input];
    };
    const hintText = fields.length
      ? (overwrite ? 'Fill in only the fields to change; empty fields keep their current value. '
        : 'Every field is needed. ') + 'Values are sent once and never shown again.'
      : (entry && entry.format_hint ? entry.format_hint + '. ' : '') +
        'The value is sent once and never shown again.';
    const form = h('form', { class: 'form', id: `${id}-form`, novalidate: true,
      'aria-label': `${overwrite ? 'Rotate' : 'Add'} ${this.#title()}` },
    fields.length
      ? fields.map((f, i) => secret(`${id}-value${i ? '-' + i : ''}`, `field:${f}`,
        `${overwrite ? 'New ' : ''}${f} for ${this.#title()}`, { required: !overwrite }))
      : secret(`${id}-value`, 'value', `${overwrite ? 'New value' : 'Value'} for ${this.#title()}`,
        { placeholder: this.getAttribute('placeholder') || (entry && entry.placeholder) || '',
          required: true }),
    h('p', { class: 'hint', id: `${id}-hint`, text: hintText }),
    h('p', { class: 'field-error', id: `${id}-err`, hidden: true }));
    if (overwrite) {
      form.append(h('div', { class: 'check' },
        h('input', { type: 'checkbox', id: `${id}-ack`, name: 'ack', 'aria-describedby': `${id}-ack-err` }),
        ' ',
        h('label', { for: `${id}-ack`, text: `Replace version ${s.version}: the current value cannot be recovered from here` })),
      h('p', { class: 'field-error', id: `${id}-ack-err`, hidden: true }));
    }
    if (entry && entry.live_check) {
      // Spec 001: validate API keys before saving, where the provider can be asked.
      form.append(h('div', { class: 'check' },
        h('input', { type: 'checkbox', id: `${id}-check`, name: 'check_key', checked: true }),
        ' ',
        h('label', { for: `${id}-check`,
          text: `Check the key with ${entry.live_check.host} before saving` })));
    }
    form.append(h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'primary', id: `${id}-save`,
        text: overwrite ? 'Save & Overwrite' : 'Save' }),
      h('button', { type: 'button', onclick: () => this.#toggle('edit'), text: 'Cancel' })));
    form.addEventListener('submit', (ev) => { ev.preventDefault(); this.#save(form, s); });
    return form;
  }

  #fieldError(form, which, text, field = null) {
    const id = this.#id;
    const el = this.#root.getElementById(which === 'ack' ? `${id}-ack-err` : `${id}-err`);
    field = field || this.#root.getElementById(which === 'ack' ? `${id}-ack` : `${id}-value`);
    if (!el || !field) return;
    el.textContent = text || '';
    el.hidden = !text;
    if (text) field.setAttribute('aria-invalid', 'true');
    else field.removeAttribute('aria-invalid');
  }

  async #save(form, s) {
    if (this.#busy) return;
    const inputs = [...form.querySelectorAll('input[type=password]')];
    const ack = form.elements.namedItem('ack');
    for (const i of inputs) i.removeAttribute('aria-invalid');
    this.#fieldError(form, 'value', null);
    if (ack) this.#fieldError(form, 'ack', null);
    const fields = this.#jsonFields();
    // One value, or (a JSON credential) the whole object to add, or the fields to change.
    let problem = null;
    let bad = inputs[0];
    let changes = null;
    let value = inputs[0].value;
    if (fields.length) {
      const filled = inputs.filter((i) => i.value.trim());
      const empty = inputs.find((i) => !i.value.trim());
      if (!s.configured && empty) {
        problem = `Enter ${empty.name.slice(6)}: every field is needed`;
        bad = empty;
      } else if (!filled.length) {
        problem = 'Enter a new value for at least one field; empty fields keep their current value';
      } else if (s.configured) {
        changes = Object.fromEntries(filled.map((i) => [i.name.slice(6), i.value]));
        value = null;
      } else {
        value = JSON.stringify(Object.fromEntries(inputs.map((i) => [i.name.slice(6), i.value])));
      }
    }
    if (!problem && value !== null) problem = checkValue(this.#entry, value, this.#limits);
    if (problem) {
      this.#fieldError(form, 'value', problem, bad);
      bad.focus();
      return;
    }
    if (ack && !ack.checked) {
      this.#fieldError(form, 'ack', 'Tick this box to confirm that the current value will be replaced');
      ack.focus();
      return;
    }
    const expected = s.configured ? s.version : 0;
    const body = changes ? { fields: changes, expected_version: expected }
      : { secret_value: value, expected_version: expected };
    const checkKey = form.elements.namedItem('check_key');
    if (checkKey && checkKey.checked && !changes) body.check_key = true;
    // Out of the page before the request leaves: the fields, and (below) every reference.
    for (const i of inputs) i.value = '';
    value = null;
    changes = null;
    if (this.domain) body.domain_id = this.domain;
    this.#busy = true;
    for (const b of form.querySelectorAll('button')) b.disabled = true;
    const sending = body.fields ? this.#api().patchFields(this.org, this.secretName, body)
      : this.#api().put(this.org, this.secretName, body);
    body.secret_value = null;
    body.fields = null;
    const input = inputs[0];
    let result;
    try {
      result = await sending;
    } catch (err) {
      this.#busy = false;
      for (const b of form.querySelectorAll('button')) b.disabled = false;
      announceUnauthorized(this, err);
      let text = userMessage(err);
      if (err instanceof KeysafeError && err.status === 409) {
        text = 'Someone changed this secret since the page loaded. Its status is reloaded: check it and try again.';
      }
      this.#fieldError(form, 'value', text + ' Paste the value again to retry.');
      input.focus();
      if (err instanceof KeysafeError && err.status === 409) this.#reloadStatus();
      return;
    }
    this.#busy = false;
    this.#mode = 'idle';
    const check = result.key_check;
    const checked = !check ? '' : check.outcome === 'valid'
      ? ` Checked: ${check.detail}.` : ` Not confirmed: ${check.detail}.`;
    this.#message = { text: `Saved ${this.#title()}: version ${result.version}.${checked}` };
    this.#status = { ...s, configured: true, deleted: false, version: result.version };
    this.#render();
    this.#focusAction('edit');
    this.#changed('saved', { version: result.version });
    this.#reloadStatus();
  }

  /** Description and tags: metadata, changed without a new version (PATCH). */
  #detailsForm(s) {
    const id = this.#id;
    const desc = h('input', { id: `${id}-desc`, name: 'description', type: 'text',
      autocomplete: 'off', maxlength: String(MAX_DESCRIPTION), 'aria-describedby': `${id}-det-err` });
    desc.value = s.description || '';
    const rows = h('tbody', {});
    const addRow = (key = '', value = '') => {
      const n = ++this.#tagSeq;
      const reserved = isRotationTag(key);
      const k = h('input', { id: `${id}-tk${n}`, name: 'tag-key', type: 'text', autocomplete: 'off',
        spellcheck: 'false', maxlength: String(MAX_TAG_KEY), 'aria-label': 'Tag name', readonly: reserved });
      const v = h('input', { id: `${id}-tv${n}`, name: 'tag-value', type: 'text', autocomplete: 'off',
        spellcheck: 'false', maxlength: String(MAX_TAG_VALUE), 'aria-label': `Value of tag ${key || n}`,
        readonly: reserved });
      k.value = key;
      v.value = value;
      const row = h('tr', { class: 'tag-row' }, h('td', {}, k), h('td', {}, v));
      if (reserved) {
        row.append(h('td', { class: 'meta', text: 'rotation setting: keysafe rotate configure' }));
      } else {
        row.append(h('td', {}, h('button', { type: 'button', 'aria-label': `Remove tag ${key || n}`,
          text: 'Remove', onclick: () => { row.remove(); addButton.focus(); } })));
      }
      rows.append(row);
      return k;
    };
    const addButton = h('button', { type: 'button', id: `${id}-tag-add`, text: 'Add tag',
      onclick: () => addRow().focus() });
    for (const [k, v] of Object.entries(s.tags || {}).sort(([a], [b]) => a.localeCompare(b))) addRow(k, v);
    const form = h('form', { class: 'form', id: `${id}-det`, novalidate: true,
      'aria-label': `Details of ${this.#title()}` },
    h('label', { for: `${id}-desc`, text: 'Description' }),
    desc,
    h('table', { class: 'tags-edit' },
      h('caption', { text: 'Tags (metadata: never secret values)' }),
      h('thead', {}, h('tr', {}, ['Name', 'Value', ''].map((c) => h('th', { scope: 'col', text: c })))),
      rows),
    h('div', { class: 'buttons' }, addButton),
    h('p', { class: 'hint', text: 'Saved without a new version; the value is not touched.' }),
    h('p', { class: 'field-error', id: `${id}-det-err`, role: 'alert', hidden: true }),
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'primary', id: `${id}-det-save`, text: 'Save details' }),
      h('button', { type: 'button', onclick: () => this.#toggle('details'), text: 'Cancel' })));
    form.addEventListener('submit', (ev) => { ev.preventDefault(); this.#saveDetails(form, s); });
    return form;
  }

  #detailsError(text) {
    const el = this.#root.getElementById(`${this.#id}-det-err`);
    if (!el) return;
    el.textContent = text || '';
    el.hidden = !text;
  }

  async #saveDetails(form, s) {
    if (this.#busy) return;
    this.#detailsError(null);
    const change = detailsChange(s, form.elements.namedItem('description').value,
      [...form.querySelectorAll('tr.tag-row')].map((row) => {
        const [k, v] = row.querySelectorAll('input');
        return [k.value.trim(), v.value.trim(), k];
      }));
    if (change.error) {
      this.#detailsError(change.error);
      if (change.field) change.field.focus();
      return;
    }
    const body = change.body;
    if (this.domain) body.domain_id = this.domain;
    this.#busy = true;
    for (const b of form.querySelectorAll('button')) b.disabled = true;
    try {
      this.#status = await this.#api().patch(this.org, this.secretName, body);
    } catch (err) {
      this.#busy = false;
      for (const b of form.querySelectorAll('button')) b.disabled = false;
      announceUnauthorized(this, err);
      this.#detailsError(userMessage(err));
      return;
    }
    this.#busy = false;
    this.#mode = 'idle';
    this.#message = { text: `Saved the details of ${this.#title()}.` };
    this.#render();
    this.#focusAction('details');
    this.#changed('details', {});
  }

  #confirmDelete(s) {
    const id = this.#id;
    const days = this.#limits && this.#limits.recovery_window_days;
    const until = days ? ` It can be restored for ${days} day${days === 1 ? '' : 's'}.` : '';
    return h('div', { class: 'confirm', id: `${id}-del`, role: 'group', 'aria-labelledby': `${id}-del-q` },
      h('p', { id: `${id}-del-q`, text: `Delete ${this.#title()}?${until}` }),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'danger primary', disabled: this.#busy,
          onclick: () => this.#remove(), text: 'Yes, delete' }),
        h('button', { type: 'button', id: `${id}-del-cancel`, onclick: () => this.#toggle('delete'),
          text: 'Cancel' })));
  }

  #confirmRotate(s) {
    const id = this.#id;
    const how = s.rotator === 'random' ? 'keysafe makes a new random value'
      : `the ${s.rotator} rotator issues a new value`;
    return h('div', { class: 'confirm', id: `${id}-rot`, role: 'group', 'aria-labelledby': `${id}-rot-q` },
      h('p', { id: `${id}-rot-q`, text: `Rotate ${this.#title()} now? ${how[0].toUpperCase() + how.slice(1)}; ` +
        `version ${s.version} stays readable for the grace period, and programs pick up the new one.` }),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'primary', disabled: this.#busy,
          onclick: () => this.#rotateNow(), text: 'Yes, rotate now' }),
        h('button', { type: 'button', id: `${id}-rot-cancel`, onclick: () => this.#toggle('rotate'),
          text: 'Cancel' })));
  }

  async #rotateNow() {
    this.#busy = true;
    this.#render();
    try {
      const out = await this.#api().rotate(this.org, this.secretName, this.domain || undefined);
      this.#mode = 'idle';
      this.#message = { text: out.version
        ? `Rotated ${this.#title()}: version ${out.version}. Nobody has seen the new value.`
        : `Rotation of ${this.#title()}: ${out.outcome}${out.detail ? ' (' + out.detail + ')' : ''}.` };
      this.#changed('rotated', { version: out.version });
    } catch (err) {
      announceUnauthorized(this, err);
      this.#message = { text: userMessage(err), bad: true };
    }
    this.#busy = false;
    await this.#reloadStatus();
    this.#focusAction('rotate-now');
  }

  async #remove() {
    this.#busy = true;
    this.#render();
    try {
      await this.#api().remove(this.org, this.secretName, this.domain || undefined);
      this.#mode = 'idle';
      this.#message = { text: `Deleted ${this.#title()}. You can restore it until the recovery window ends.` };
      this.#changed('deleted', {});
    } catch (err) {
      announceUnauthorized(this, err);
      this.#message = { text: userMessage(err), bad: true };
    }
    this.#busy = false;
    await this.#reloadStatus();
    this.#focusAction('restore');
  }

  async #checkStored() {
    this.#busy = true;
    this.#render();
    try {
      const check = await this.#api().checkStored(this.org, this.secretName, this.domain || undefined);
      const text = check.outcome === 'valid' ? `Checked: ${check.detail}.`
        : check.outcome === 'rejected' ? `The stored key no longer works: ${check.detail}. Rotate it.`
          : `Not confirmed: ${check.detail}.`;
      this.#message = { text, bad: check.outcome === 'rejected' };
    } catch (err) {
      announceUnauthorized(this, err);
      this.#message = { text: userMessage(err), bad: true };
    }
    this.#busy = false;
    this.#render();
    this.#focusAction('check-stored');
  }

  async #restore() {
    this.#busy = true;
    this.#render();
    try {
      this.#status = await this.#api().restore(this.org, this.secretName, this.domain || undefined);
      this.#message = { text: `Restored ${this.#title()}: version ${this.#status.version}.` };
      this.#changed('restored', {});
    } catch (err) {
      announceUnauthorized(this, err);
      this.#message = { text: userMessage(err), bad: true };
    }
    this.#busy = false;
    this.#render();
    this.#focusAction('edit');
  }

  async #loadHistory() {
    try {
      this.#history = await this.#api().versions(this.org, this.secretName, this.domain || undefined);
    } catch (err) {
      announceUnauthorized(this, err);
      this.#history = { error: userMessage(err) };
    }
    if (this.#mode === 'history') {
      this.#render();
      const t = this.#root.getElementById(`${this.#id}-hist`);
      if (t) t.focus();
    }
  }

  #historyView() {
    const id = this.#id;
    const box = h('div', { class: 'confirm', id: `${id}-hist`, tabindex: '-1' });
    const hist = this.#history;
    if (!hist) box.append(h('p', { class: 'meta', text: 'Loading history…' }));
    else if (hist.error) box.append(h('p', { class: 'field-error', role: 'alert', text: hist.error }));
    else {
      const s = this.#status;
      const live = s && s.configured && !s.deleted;
      const canRoll = live && this.#can('rollback');
      const canDestroy = this.#can('destroy');
      const actions = (v) => {
        const cell = h('td', { class: 'row-actions' });
        if (v.destroyed) return cell;
        const current = v.version === hist.current_version;
        if (canRoll && !current) {
          cell.append(h('button', { type: 'button', id: `${id}-rb-${v.version}`, disabled: this.#busy,
            'aria-label': `Roll back to version ${v.version}`, text: 'Roll back',
            onclick: () => this.#rollback(v.version) }));
        }
        if (canDestroy && !current) {
          const armed = this.#armed === v.version;
          cell.append(h('button', { type: 'button', class: armed ? 'danger primary' : 'danger',
            id: `${id}-ds-${v.version}`, disabled: this.#busy,
            'aria-label': armed ? `Confirm: destroy version ${v.version} for good`
              : `Destroy version ${v.version}`,
            text: armed ? 'Destroy for good?' : 'Destroy',
            onclick: () => this.#destroy(v.version) }));
        }
        return cell;
      };
      const cols = ['Version', 'Created', 'By', 'State'];
      if (canRoll || canDestroy) cols.push('Actions');
      box.append(h('table', {},
        h('caption', { text: `Versions of ${this.#title()}, newest first (metadata only)` }),
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', text: c })))),
        h('tbody', {}, [...hist.versions].sort((a, b) => b.version - a.version).map((v) => h('tr', {},
          h('td', { text: String(v.version) }), h('td', { text: when(v.created_at) }),
          h('td', { text: v.created_by || '' }),
          h('td', { text: v.destroyed ? 'destroyed' : v.version === hist.current_version ? 'current' : 'kept' }),
          canRoll || canDestroy ? actions(v) : null)))));
    }
    return box;
  }

  async #rollback(version) {
    this.#busy = true;
    this.#armed = null;
    this.#render();
    try {
      const body = { version };
      if (this.domain) body.domain_id = this.domain;
      const out = await this.#api().rollback(this.org, this.secretName, body);
      this.#message = { text: `Rolled ${this.#title()} back to version ${version}: now version ${out.version}.` };
      this.#changed('rolled-back', { version: out.version });
    } catch (err) {
      announceUnauthorized(this, err);
      this.#message = { text: userMessage(err), bad: true };
    }
    this.#busy = false;
    await this.#reloadStatus();
    this.#history = null;
    await this.#loadHistory();
  }

  /** First click arms the button, the second destroys: there is no undo. */
  async #destroy(version) {
    if (this.#armed !== version) {
      this.#armed = version;
      this.#message = { text: `Press again to destroy version ${version} of ${this.#title()}: it can never be read again.`, bad: true };
      this.#render();
      const b = this.#root.getElementById(`${this.#id}-ds-${version}`);
      if (b) b.focus();
      return;
    }
    this.#armed = null;
    this.#busy = true;
    this.#render();
    try {
      const body = { versions: [version] };
      if (this.domain) body.domain_id = this.domain;
      await this.#api().destroy(this.org, this.secretName, body);
      this.#message = { text: `Destroyed version ${version} of ${this.#title()}.` };
      this.#changed('destroyed', { version });
    } catch (err) {
      announceUnauthorized(this, err);
      this.#message = { text: userMessage(err), bad: true };
    }
    this.#busy = false;
    this.#history = null;
    await this.#loadHistory();
  }

  async #reloadStatus() {
    try {
      this.#status = await this.#api().status(this.org, this.secretName, this.domain || undefined);
    } catch (err) {
      announceUnauthorized(this, err);
    }
    const active = this.#root.activeElement;
    const activeId = active && active.id;
    if (this.#mode !== 'edit') {
      this.#render();
      if (activeId) {
        const again = this.#root.getElementById(activeId);
        if (again) again.focus();
      }
    }
  }

  #focusAction(which) {
    const order = [which, 'edit', 'restore', 'history'];
    for (const w of order) {
      const b = this.#root.getElementById(`${this.#id}-${w}`);
      if (b && !b.disabled) { b.focus(); return; }
    }
  }

  #changed(what, detail) {
    this.dispatchEvent(new CustomEvent('keysafe-changed', { bubbles: true, composed: true,
      detail: { action: what, secretName: this.secretName, organization: this.org,
        domain: this.domain, ...detail } }));
  }
}

const MAX_DESCRIPTION = 1000;
const MAX_TAG_KEY = 128;
const MAX_TAG_VALUE = 256;

/** Set only by `keysafe rotate configure`; the server refuses them from the API. */
function isRotationTag(key) {
  return key === 'rotator' || key === 'maintenance_window' ||
    key.startsWith('rotator.') || key.startsWith('rotation.');
}

/** The PATCH body turning ``s`` into the edited description and tag rows ([name,
 * value, field]), or an error naming the problem (and the field to focus). */
export function detailsChange(s, description, rows) {
  const tags = {};
  for (const [key, value, field] of rows) {
    if (!key && !value) continue;
    if (!key) return { error: `A tag with the value "${value}" has no name`, field };
    if (key.length > MAX_TAG_KEY) return { error: `The tag name ${key.slice(0, 20)}… is longer than ${MAX_TAG_KEY} characters`, field };
    if (value.length > MAX_TAG_VALUE) return { error: `The value of tag ${key} is longer than ${MAX_TAG_VALUE} characters`, field };
    if (key in tags) return { error: `The tag ${key} appears twice`, field };
    if (isRotationTag(key) && (s.tags || {})[key] !== value) {
      return { error: `The tag ${key} is a rotation setting: set it with keysafe rotate configure`, field };
    }
    tags[key] = value;
  }
  const body = {};
  const patch = {};
  for (const [key, value] of Object.entries(tags)) {
    if ((s.tags || {})[key] !== value) patch[key] = value;
  }
  for (const key of Object.keys(s.tags || {})) {
    if (!(key in tags) && !isRotationTag(key)) patch[key] = null;
  }
  if (Object.keys(patch).length) body.tags = patch;
  const desc = description.trim();
  if (desc !== (s.description || '')) body.description = desc;
  if (!Object.keys(body).length) return { error: 'Nothing changed' };
  return { body };
}

function findEntry(catalog, name) {
  const key = name.toLowerCase().replaceAll('-', '_');
  for (const entries of Object.values(catalog.categories || {})) {
    for (const e of entries) if (e.secret_name.toLowerCase().replaceAll('-', '_') === key) return e;
  }
  return null;
}

const CATEGORY_TITLES = { llm: 'LLM providers', integrations: 'Integrations',
  infrastructure: 'Infrastructure', database: 'Databases', application: 'Application',
  cloud: 'Cloud', billing: 'Billing' };

// -- <keysafe-secrets-panel> ---------------------------------------------------------

/**
 * Every well-known secret of the catalog, by category, and every custom secret of one
 * org and domain, as cards. Attributes: organization, domain, api-base. Properties:
 * token or credentials.
 */
export class KeysafeSecretsPanel extends HTMLElement {
  static observedAttributes = ['organization', 'domain', 'api-base'];

  #root;
  #credentials = null;
  #client = null;
  #loadSeq = 0;
  #filter = '';

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: 'open' });
    this.#root.adoptedStyleSheets = [styles()];
  }

  set token(value) { this.credentials = value ? () => value : null; }
  set credentials(fn) {
    this.#credentials = typeof fn === 'function' ? fn : null;
    this.#client = null;
    if (this.isConnected) this.refresh();
  }

  get org() { return this.getAttribute('organization') || ''; }
  get domain() { return this.getAttribute('domain') || ''; }

  connectedCallback() {
    upgradeProperties(this);
    this.refresh();
  }
  attributeChangedCallback(_n, old, value) {
    if (old !== value && this.isConnected) {
      if (_n === 'api-base') this.#client = null;
      this.refresh();
    }
  }

  #api() {
    if (!this.#client) {
      this.#client = new KeysafeClient(this.getAttribute('api-base') || '', this.#credentials);
    }
    return this.#client;
  }

  async refresh() {
    const seq = ++this.#loadSeq;
    const root = this.#root;
    if (!this.#credentials) {
      root.replaceChildren(h('p', { class: 'notice', role: 'status', text: 'Waiting for a credential from the host page.' }));
      return;
    }
    if (!this.org) {
      root.replaceChildren(h('div', { class: 'error-box', role: 'alert', text: 'This panel needs an organization attribute.' }));
      return;
    }
    root.replaceChildren(h('p', { class: 'notice', role: 'status', text: 'Loading secrets…' }));
    let ident, cat, list;
    try {
      const api = this.#api();
      [ident, cat, list] = await Promise.all([api.whoami(), api.catalog(),
        api.list(this.org, this.domain || undefined)]);
    } catch (err) {
      if (seq !== this.#loadSeq) return;
      announceUnauthorized(this, err);
      const box = h('div', { class: 'error-box', role: 'alert' },
        h('p', {}, h('strong', { text: 'keysafe could not load the secrets. ' }), userMessage(err)),
        h('button', { type: 'button', onclick: () => this.refresh(), text: 'Retry' }));
      root.replaceChildren(box);
      this.dispatchEvent(new CustomEvent('keysafe-error', { bubbles: true, composed: true,
        detail: { status: err.status, code: err.code, message: userMessage(err) } }));
      return;
    }
    if (seq !== this.#loadSeq) return;
    this.#renderAll(ident, cat, list);
  }

  #renderAll(ident, cat, list) {
    const api = this.#api();
    const perms = ident.permissions || [];
    const canWrite = perms.includes('write');
    const domain = this.domain || cat.default_domain || 'shared';
    const byName = new Map(list.secrets.map((x) => [x.secret_name, x]));
    const known = new Set();
    const frag = [];
    frag.push(h('p', { class: 'notice', id: 'role-note' },
      `Organization ${this.org}, domain ${domain}. `,
      canWrite ? 'Values you save are sent once and can never be read back here.'
        : 'You can see status only: your role cannot change secrets.'));
    const search = h('input', { type: 'search', id: 'filter', autocomplete: 'off',
      value: this.#filter, 'aria-describedby': 'filter-count' });
    const count = h('p', { class: 'hint', id: 'filter-count', 'aria-live': 'polite' });
    frag.push(h('div', { class: 'toolbar' }, h('div', {},
      h('label', { for: 'filter', text: 'Filter secrets' }), search, count)));
    const cards = [];
    const makeCard = (name, entry, status) => {
      const card = document.createElement('keysafe-secret-card');
      card.setAttribute('organization', this.org);
      if (this.domain) card.setAttribute('domain', this.domain);
      card.setAttribute('secret-name', name);
      card.setup({ client: api, identity: ident, entry, limits: cat,
        status: status || { configured: false, secret_name: name, organization_id: this.org,
          domain_id: domain } });
      const item = h('li', {}, card);
      item.dataset.search = [name, entry && entry.display_name, entry && entry.description,
        entry && entry.env_var].filter(Boolean).join(' ').toLowerCase();
      cards.push(item);
      return item;
    };
    // A token scoped to some secrets of the domain: only their cards (the others would
    // read as "not set" and refuse a save).
    const covered = namesCovered(ident.orgs, this.org, domain);
    for (const [category, entries] of Object.entries(cat.categories)) {
      const sid = `cat-${category}`;
      const items = entries.filter((e) => covered(e.secret_name)).map((e) => {
        known.add(e.secret_name);
        return makeCard(e.secret_name, e, byName.get(e.secret_name));
      });
      if (!items.length) continue;
      frag.push(h('section', { 'aria-labelledby': sid, 'data-category': category },
        h('h2', { id: sid, text: CATEGORY_TITLES[category] || category[0].toUpperCase() + category.slice(1) }),
        h('ul', { class: 'grid' }, items)));
    }
    const custom = list.secrets.filter((x) => !known.has(x.secret_name));
    const customItems = custom.map((x) => makeCard(x.secret_name, null, x));
    const customSection = h('section', { 'aria-labelledby': 'cat-custom', 'data-category': 'custom' },
      h('h2', { id: 'cat-custom', text: 'Custom secrets' }),
      custom.length ? h('ul', { class: 'grid' }, customItems)
        : h('p', { class: 'meta', text: 'No custom secrets in this domain yet.' }));
    if (canWrite) customSection.append(this.#customForm(api, cat));
    frag.push(customSection);
    const applyFilter = () => {
      const q = search.value.trim().toLowerCase();
      this.#filter = search.value;
      let shown = 0;
      for (const item of cards) {
        const hit = !q || item.dataset.search.includes(q);
        item.hidden = !hit;
        if (hit) shown += 1;
      }
      for (const sec of this.#root.querySelectorAll('section[data-category]')) {
        if (sec.dataset.category === 'custom') continue;
        sec.hidden = ![...sec.querySelectorAll('li')].some((li) => !li.hidden);
      }
      count.textContent = q ? `${shown} of ${cards.length} secrets match` : '';
    };
    search.addEventListener('input', applyFilter);
    this.#root.replaceChildren(...frag);
    applyFilter();
  }

  #customForm(api, cat) {
    const form = h('form', { class: 'form', novalidate: true, 'aria-labelledby': 'custom-title' },
      h('h3', { id: 'custom-title', text: 'Add a custom secret' }),
      h('label', { for: 'custom-name', text: 'Name' }),
      h('input', { id: 'custom-name', name: 'name', type: 'text', autocomplete: 'off',
        spellcheck: 'false', 'aria-describedby': 'custom-name-hint custom-name-err', required: true }),
      h('p', { class: 'hint', id: 'custom-name-hint', text: 'Letters, digits, ".", "_" and "-", e.g. partner_api_key' }),
      h('p', { class: 'field-error', id: 'custom-name-err', hidden: true }),
      h('label', { for: 'custom-value', text: 'Value' }),
      h('input', { id: 'custom-value', name: 'value', type: 'password', autocomplete: 'off',
        spellcheck: 'false', 'aria-describedby': 'custom-value-err', required: true }),
      h('p', { class: 'field-error', id: 'custom-value-err', hidden: true }),
      h('label', { for: 'custom-desc', text: 'Description (optional)' }),
      h('input', { id: 'custom-desc', name: 'description', type: 'text', autocomplete: 'off', maxlength: '1000' }),
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary', id: 'custom-save', text: 'Save' })),
      h('p', { class: 'status-msg', role: 'status', 'aria-live': 'polite', id: 'custom-msg' }));
    const show = (field, text) => {
      const err = this.#root.getElementById(`custom-${field}-err`);
      const inp = this.#root.getElementById(`custom-${field}`);
      err.textContent = text || '';
      err.hidden = !text;
      if (text) inp.setAttribute('aria-invalid', 'true'); else inp.removeAttribute('aria-invalid');
    };
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = form.elements.namedItem('name');
      const value = form.elements.namedItem('value');
      const desc = form.elements.namedItem('description');
      show('name', null);
      show('value', null);
      const entry = findEntry(cat, name.value.trim());
      const nameErr = checkName(name.value.trim()) ||
        (entry ? `${entry.display_name} is a well-known secret: use its card above` : null);
      if (nameErr) { show('name', nameErr); name.focus(); return; }
      const valueErr = checkValue(null, value.value, cat);
      if (valueErr) { show('value', valueErr); value.focus(); return; }
      const body = { secret_value: value.value, expected_version: 0 };
      value.value = ''; // out of the page before the request leaves
      if (this.domain) body.domain_id = this.domain;
      if (desc.value.trim()) body.description = desc.value.trim();
      const button = this.#root.getElementById('custom-save');
      button.disabled = true;
      const sending = api.put(this.org, name.value.trim(), body);
      body.secret_value = null;
      try {
        await sending;
      } catch (err) {
        button.disabled = false;
        announceUnauthorized(this, err);
        const text = err instanceof KeysafeError && err.status === 409
          ? 'A secret with this name exists already: rotate it from its card.' : userMessage(err);
        const nameProblem = err instanceof KeysafeError && (err.code === 'invalid_name' || err.status === 409);
        show(nameProblem ? 'name' : 'value', text + (nameProblem ? '' : ' Paste the value again to retry.'));
        (nameProblem ? name : value).focus();
        return;
      }
      const saved = name.value.trim();
      await this.refresh();
      const msg = this.#root.getElementById('custom-msg');
      if (msg) msg.textContent = `Saved ${saved}.`;
      const again = this.#root.getElementById('custom-name');
      if (again) again.focus(); // keyboard users stay where they were
    });
    return form;
  }
}

if (!customElements.get('keysafe-secret-card')) customElements.define('keysafe-secret-card', KeysafeSecretCard);
if (!customElements.get('keysafe-secrets-panel')) customElements.define('keysafe-secrets-panel', KeysafeSecretsPanel);
