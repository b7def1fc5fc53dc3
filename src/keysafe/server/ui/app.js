// The keysafe panel at /ui: sign in, pick org and domain, secrets, audit log, access report,
// tokens.
//
// The credential lives in this module's memory only: no cookie (so no CSRF surface),
// no localStorage or sessionStorage. Reloading the page signs out; so does
// IDLE_MINUTES without a key press or click, and any 401 from the server.

import { KeysafeClient, KeysafeError, h, when } from './keysafe-components.js';

const IDLE_MINUTES = 15;
const main = document.getElementById('main');
const who = document.getElementById('who');

let session = null; // { token, client, identity, lastActive }
let idleTimer = null;

function credential() { return session ? session.token : null; }

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function focusFirst(sel) {
  const el = main.querySelector(sel);
  if (el) el.focus();
}

// -- sign in / out ---------------------------------------------------------------------

function signInView(message = null) {
  const form = h('form', { class: 'signin', id: 'signin', novalidate: true, 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title', text: 'Sign in to keysafe' }),
    message ? h('p', { class: 'notice', role: 'status', id: 'signin-note', text: message }) : null,
    h('label', { for: 'token', text: 'Access token or host JWT' }),
    h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
      'aria-describedby': 'token-hint token-err', required: true }),
    h('p', { class: 'hint', id: 'token-hint',
      text: 'A keysafe token (ks_…) or a JWT from your platform. It is kept in this tab\'s memory only: reloading signs you out.' }),
    h('p', { class: 'field-error', id: 'token-err', role: 'alert', hidden: true }),
    h('button', { type: 'submit', class: 'primary', id: 'signin-button', text: 'Sign in' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = form.elements.namedItem('token');
    const err = document.getElementById('token-err');
    const token = input.value.trim();
    input.value = '';
    err.hidden = true;
    input.removeAttribute('aria-invalid');
    if (!token) {
      err.textContent = 'Enter a token: this field is empty';
      err.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    const client = new KeysafeClient('', () => token);
    try {
      const identity = await client.whoami();
      startSession(token, client, identity);
    } catch (e) {
      err.textContent = e instanceof KeysafeError && e.status === 401
        ? 'This token was not accepted (unknown, revoked or expired).'
        : (e.detail || String(e));
      err.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  });
  who.hidden = true;
  who.replaceChildren();
  show(form);
  focusFirst('#token');
}

function signOut(message) {
  session = null;
  if (idleTimer) clearInterval(idleTimer);
  idleTimer = null;
  signInView(message);
}

function startSession(token, client, identity) {
  session = { token, client, identity, lastActive: Date.now(), org: null, domain: null, tab: 'secrets' };
  if (idleTimer) clearInterval(idleTimer);
  idleTimer = setInterval(() => {
    if (session && Date.now() - session.lastActive > IDLE_MINUTES * 60000) {
      signOut(`Signed out after ${IDLE_MINUTES} minutes without activity.`);
    }
  }, 15000);
  const roles = identity.roles.join(', ');
  // Which environment a pasted key lands in (production or not) stays in sight.
  const env = h('span', { id: 'who-env', class: 'badge env', hidden: true });
  who.replaceChildren(env,
    h('span', { id: 'who-name', text: `${identity.kind}:${identity.name}` }),
    h('span', { class: 'badge', text: roles }),
    h('button', { type: 'button', id: 'signout', onclick: () => signOut('Signed out.'), text: 'Sign out' }));
  who.hidden = false;
  client.catalog().then((cat) => {
    if (!cat || !cat.environment) return;
    env.textContent = `${cat.app} · ${cat.environment}`;
    env.title = `Secrets saved here belong to the ${cat.environment} environment of ${cat.app}`;
    env.classList.toggle('prod', /^prod(uction)?$/i.test(cat.environment));
    env.hidden = false;
  }).catch(() => {});
  scopeView();
}

for (const type of ['keydown', 'pointerdown']) {
  document.addEventListener(type, () => { if (session) session.lastActive = Date.now(); }, { capture: true });
}
document.addEventListener('keysafe-unauthorized', (ev) => {
  if (session) signOut(ev.detail && ev.detail.message);
});

// -- org, domain, tabs -------------------------------------------------------------------

function scopeView() {
  const ident = session.identity;
  const orgs = ident.orgs; // null: every org; "org" or "org/domain" (that domain only)
  const orgField = orgs && orgs.length
    ? h('select', { id: 'org', name: 'org', required: true },
      orgs.map((o) => h('option', { value: o, text: o.replace('/', ' / ') })))
    : h('input', { id: 'org', name: 'org', type: 'text', autocomplete: 'off', spellcheck: 'false',
      'aria-describedby': 'org-err', required: true, placeholder: 'acme-corp', list: 'org-list' });
  // A token for every org types one; the orgs that hold secrets are offered as it types.
  const orgList = h('datalist', { id: 'org-list' });
  if (!(orgs && orgs.length) && ident.permissions.includes('list')) {
    session.client.orgs().then((data) => {
      orgList.replaceChildren(...data.orgs.map((o) => h('option', {
        value: o.org, label: `${o.secrets} secret${o.secrets === 1 ? '' : 's'}` +
          (o.deleted ? `, ${o.deleted} deleted` : '') })));
    }).catch(() => {}); // an older server: no suggestions
  }
  const form = h('form', { class: 'scope', id: 'scope', novalidate: true, 'aria-label': 'Organization and domain' },
    h('div', {}, h('label', { for: 'org', text: 'Organization' }), orgField, orgList,
      h('p', { class: 'field-error', id: 'org-err', role: 'alert', hidden: true })),
    h('div', {}, h('label', { for: 'domain', text: 'Domain' }),
      h('input', { id: 'domain', name: 'domain', type: 'text', autocomplete: 'off', spellcheck: 'false',
        placeholder: 'shared', 'aria-describedby': 'domain-hint' }),
      h('p', { class: 'hint', id: 'domain-hint', text: 'Empty: the shared domain' })),
    h('div', { class: 'go' }, h('button', { type: 'submit', class: 'primary', id: 'open', text: 'Open' })));
  const domainField = form.elements.namedItem('domain');
  // A scope naming one domain fixes the domain: the token covers no other of that org.
  const pinDomain = () => {
    const [, pinned] = String(orgField.value).split('/');
    if (!pinned && domainField.readOnly) domainField.value = '';
    domainField.readOnly = !!pinned;
    if (pinned) domainField.value = pinned;
  };
  orgField.addEventListener('change', pinDomain);
  if (session.org) orgField.value = session.scope || session.org;
  if (session.domain) domainField.value = session.domain;
  pinDomain();
  const seg = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const scope = String(form.elements.namedItem('org').value).trim();
    const org = scope.split('/')[0];
    const domain = String(domainField.value).trim();
    const err = document.getElementById('org-err');
    const bad = !org ? 'Enter an organization' : !seg.test(org)
      ? 'Use letters, digits, ".", "_" and "-"' : domain && !seg.test(domain)
        ? 'The domain may use letters, digits, ".", "_" and "-"' : null;
    err.textContent = bad || '';
    err.hidden = !bad;
    if (bad) { orgField.setAttribute('aria-invalid', 'true'); orgField.focus(); return; }
    orgField.removeAttribute('aria-invalid');
    session.scope = scope;
    session.org = org;
    session.domain = domain;
    // Covered only in part (some domains): the org-wide audit log is not for it.
    session.partial = !!(orgs && orgs.length && !orgs.includes(org));
    renderWorkspace(form);
  });
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Sections', id: 'tabs' });
  const body = h('div', { id: 'workspace' });
  show(h('h1', { class: 'sr-only', text: 'keysafe secrets' }), form, tabs, body);
  if (orgs && orgs.length === 1) form.requestSubmit();
  else focusFirst('#org');
}

function renderWorkspace() {
  const tabs = document.getElementById('tabs');
  // The audit log spans the whole org: not for a token that covers some domains only.
  const canAudit = session.identity.permissions.includes('audit') && !session.partial;
  const mk = (id, label) => h('button', { type: 'button', id: `tab-${id}`,
    'aria-pressed': String(session.tab === id), onclick: () => { session.tab = id; renderWorkspace(); focusFirst(`#tab-${id}`); },
    text: label });
  // Tokens of the whole org (or its domain): an admin's, as for `keysafe token`.
  const canTokens = session.identity.permissions.includes('tokens') && !session.partial;
  if (!canAudit && ['audit', 'report'].includes(session.tab)) session.tab = 'secrets';
  if (!canTokens && session.tab === 'tokens') session.tab = 'secrets';
  tabs.replaceChildren(mk('secrets', 'Secrets'), canAudit ? mk('audit', 'Audit log') : null,
    canAudit ? mk('report', 'Access report') : null, canTokens ? mk('tokens', 'Tokens') : null);
  const body = document.getElementById('workspace');
  if (session.tab === 'tokens') {
    body.replaceChildren(tokensView());
    return;
  }
  if (session.tab === 'audit') {
    body.replaceChildren(auditView());
    return;
  }
  if (session.tab === 'report') {
    body.replaceChildren(reportView());
    return;
  }
  const panel = document.createElement('keysafe-secrets-panel');
  panel.setAttribute('organization', session.org);
  if (session.domain) panel.setAttribute('domain', session.domain);
  panel.credentials = credential;
  body.replaceChildren(h('h2', { class: 'section-title', id: 'secrets-title',
    text: `Secrets of ${session.org}${session.domain ? ' / ' + session.domain : ''}` }), panel);
}

// -- audit log -------------------------------------------------------------------------

// Loads into `out`: "Loading…", then what `render` makes of the answer, or the error (an
// expired session signs out).
async function fill(out, fetch, render) {
  out.replaceChildren(h('p', { class: 'notice', text: 'Loading…' }));
  try {
    out.replaceChildren(...render(await fetch()));
  } catch (e) {
    if (e instanceof KeysafeError && e.status === 401) { signOut('Your session has expired: sign in again.'); return; }
    out.replaceChildren(h('p', { class: 'error-box', role: 'alert', text: e.detail || String(e) }));
  }
}

const ACTIONS = ['write', 'delete', 'purge', 'restore', 'rollback', 'destroy', 'status', 'list',
  'versions', 'read_value', 'audit_query', 'authenticate', 'token_create', 'token_revoke'];
const OUTCOMES = ['ok', 'denied', 'not_found', 'conflict', 'invalid_value', 'invalid_name'];

function auditView() {
  const field = (id, label, input, hint) => h('div', {}, h('label', { for: id, text: label }), input,
    hint ? h('p', { class: 'hint', id: `${id}-hint`, text: hint }) : null);
  const sel = (id, values) => h('select', { id, name: id },
    h('option', { value: '', text: 'any' }), values.map((v) => h('option', { value: v, text: v })));
  const form = h('form', { class: 'filters', id: 'audit-filters', novalidate: true, 'aria-label': 'Audit log filters' },
    field('f-action', 'Action', sel('f-action', ACTIONS)),
    field('f-outcome', 'Outcome', sel('f-outcome', OUTCOMES)),
    field('f-actor', 'Actor', h('input', { id: 'f-actor', name: 'f-actor', type: 'text', autocomplete: 'off',
      placeholder: 'token:ci-writer', 'aria-describedby': 'f-actor-hint' }), 'Exact, e.g. token:NAME or jwt:SUBJECT'),
    field('f-path', 'Path', h('input', { id: 'f-path', name: 'f-path', type: 'text', autocomplete: 'off',
      'aria-describedby': 'f-path-hint' }), 'Exact path, or a prefix ending in /'),
    field('f-since', 'Since', h('input', { id: 'f-since', name: 'f-since', type: 'datetime-local' })),
    field('f-until', 'Until', h('input', { id: 'f-until', name: 'f-until', type: 'datetime-local' })),
    field('f-limit', 'Rows', h('input', { id: 'f-limit', name: 'f-limit', type: 'number', min: '1', max: '1000',
      value: '100', 'aria-describedby': 'f-limit-err' })),
    h('div', { class: 'go' }, h('button', { type: 'submit', class: 'primary', id: 'audit-apply', text: 'Apply filters' })),
    h('p', { class: 'field-error', id: 'f-limit-err', role: 'alert', hidden: true }));
  const out = h('div', { id: 'audit-results', 'aria-live': 'polite' });
  const load = async () => {
    const v = (id) => String(form.elements.namedItem(id).value).trim();
    const limit = Number(v('f-limit') || '100');
    const err = form.querySelector('#f-limit-err');
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      err.textContent = 'Rows must be a whole number from 1 to 1000';
      err.hidden = false;
      return;
    }
    err.hidden = true;
    const iso = (x) => (x ? new Date(x).toISOString() : null);
    const params = { org_id: session.org, action: v('f-action'), outcome: v('f-outcome'),
      actor: v('f-actor'), path: v('f-path'), since: iso(v('f-since')), until: iso(v('f-until')), limit };
    await fill(out, () => session.client.audit(params), (page) => [auditTable(page.records)]);
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  load();
  return h('section', { 'aria-labelledby': 'audit-title' },
    h('h2', { class: 'section-title', id: 'audit-title', text: `Audit log of ${session.org}` }), form, out);
}

function auditTable(records) {
  if (!records.length) return h('p', { class: 'notice', text: 'No records match these filters.' });
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Audit records' },
    h('table', { class: 'audit', id: 'audit-table' },
      h('caption', { text: `${records.length} record${records.length === 1 ? '' : 's'}, newest first` }),
      h('thead', {}, h('tr', {}, ['Time', 'Actor', 'Action', 'Path', 'Version', 'Outcome', 'Client', 'Request']
        .map((c) => h('th', { scope: 'col', text: c })))),
      h('tbody', {}, records.map((r) => h('tr', {},
        h('td', { text: when(r.ts) }), h('td', { text: r.actor }), h('td', { text: r.action }),
        h('td', { class: 'path', text: r.path || '' }), h('td', { text: r.version == null ? '' : String(r.version) }),
        h('td', { class: `outcome ${r.outcome === 'ok' ? 'ok' : 'bad'}`, text: r.outcome }),
        h('td', { text: r.client || '' }), h('td', { class: 'path', text: r.request_id || '' }))))));
}

// -- access report (keysafe audit report) ------------------------------------------------

const WINDOWS = [['24 hours', 1], ['7 days', 7], ['30 days', 30]];

function reportView() {
  const form = h('form', { class: 'filters', id: 'report-filters', 'aria-label': 'Access report window' },
    h('div', {}, h('label', { for: 'r-window', text: 'Window' }),
      h('select', { id: 'r-window', name: 'r-window' },
        WINDOWS.map(([label, days]) => h('option', { value: String(days), text: `Last ${label}`, selected: days === 7 })))),
    h('div', { class: 'go' }, h('button', { type: 'submit', class: 'primary', id: 'report-apply', text: 'Show report' })));
  const out = h('div', { id: 'report-results', 'aria-live': 'polite' });
  const load = async () => {
    const days = Number(form.elements.namedItem('r-window').value);
    const since = new Date(Date.now() - days * 86400000).toISOString();
    await fill(out, () => session.client.accessReport({ org_id: session.org, since }), reportBody);
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  load();
  return h('section', { 'aria-labelledby': 'report-title' },
    h('h2', { class: 'section-title', id: 'report-title', text: `Access report of ${session.org}` }), form, out);
}

function reportBody(rep) {
  const findings = rep.findings.length
    ? h('ul', { class: 'findings', id: 'report-findings', 'aria-label': 'Worth a look' },
      rep.findings.map((f) => h('li', {}, h('strong', { text: f.kind.replace('_', ' ') }), ` ${f.message}`)))
    : h('p', { class: 'notice', id: 'report-findings', text: 'Nothing worth a look in this window.' });
  const actors = rep.actors.length
    ? h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Identities' },
      h('table', { class: 'audit', id: 'report-table' },
        h('caption', { text: `${rep.actors.length} identit${rep.actors.length === 1 ? 'y' : 'ies'}, busiest first` }),
        h('thead', {}, h('tr', {}, ['Identity', 'Reads', 'Writes', 'Denied', 'Not found', 'Failed', 'Secrets read', 'Last seen', 'New']
          .map((c) => h('th', { scope: 'col', text: c })))),
        h('tbody', {}, rep.actors.map((a) => h('tr', {},
          h('td', { text: a.actor }), h('td', { text: String(a.reads) }), h('td', { text: String(a.writes) }),
          h('td', { class: `outcome ${a.denied ? 'bad' : 'ok'}`, text: String(a.denied) }),
          h('td', { text: String(a.not_found) }), h('td', { text: String(a.failed) }),
          h('td', { text: String(a.secrets_read) }), h('td', { text: a.last ? when(a.last) : '' }),
          h('td', { text: a.new ? 'yes' : '' }))))))
    : h('p', { class: 'notice', text: 'No records in this window.' });
  return [h('h3', { text: 'Worth a look' }), findings, h('h3', { text: 'Identities' }), actors];
}

// -- tokens (keysafe token create | list | revoke) -----------------------------------------

const ROLES = [['viewer', 'viewer: status and history'], ['writer', 'writer: add, rotate, delete'],
  ['admin', 'admin: everything, and tokens'], ['service', 'service: reads values (programs)']];

// Whether token `t` covers `org` (every org, the org, or a domain of it).
function covers(t, org) {
  return !t.orgs || t.orgs.some((o) => o === org || o.startsWith(`${org}/`));
}

function tokensView() {
  const field = (id, label, input, hint) => h('div', {}, h('label', { for: id, text: label }), input,
    hint ? h('p', { class: 'hint', id: `${id}-hint`, text: hint }) : null);
  const scope = session.domain ? `${session.org}/${session.domain}` : session.org;
  // Service tokens read values: the server makes them only for an admin of every org.
  const roles = ROLES.filter(([v]) => v !== 'service' || session.identity.orgs === null);
  const form = h('form', { class: 'filters', id: 'token-form', novalidate: true, 'aria-label': 'New token' },
    field('t-name', 'Name', h('input', { id: 't-name', name: 't-name', type: 'text', autocomplete: 'off',
      maxlength: '128', placeholder: 'ci-deploy', 'aria-describedby': 't-name-hint t-error' }),
      'Shown in the audit log as token:NAME'),
    field('t-role', 'Role', h('select', { id: 't-role', name: 't-role' },
      roles.map(([v, text]) => h('option', { value: v, text, selected: v === 'writer' })))),
    field('t-days', 'Expires in (days)', h('input', { id: 't-days', name: 't-days', type: 'text', inputmode: 'numeric',
      autocomplete: 'off', placeholder: 'never', 'aria-describedby': 't-days-hint t-error' }), 'Empty: never'),
    field('t-cidrs', 'Networks', h('input', { id: 't-cidrs', name: 't-cidrs', type: 'text', autocomplete: 'off',
      placeholder: '10.0.0.0/8, 192.0.2.7', 'aria-describedby': 't-cidrs-hint t-error' }),
      'Empty: any address (or, if your own token is bound to networks, those)'),
    h('div', { class: 'go' }, h('button', { type: 'submit', class: 'primary', id: 'token-create', text: `Create token for ${scope}` })),
    h('p', { class: 'field-error', id: 't-error', role: 'alert', hidden: true }));
  const made = h('div', { id: 'token-made', 'aria-live': 'polite' });
  const out = h('div', { id: 'token-results' });
  const status = h('p', { class: 'sr-only', id: 'token-status', role: 'status' });
  const error = form.querySelector('#t-error');
  const button = form.querySelector('#token-create');
  const inputs = ['t-name', 't-days', 't-cidrs'].map((id) => form.querySelector(`#${id}`));
  const clear = () => { error.hidden = true; error.textContent = ''; inputs.forEach((i) => i.removeAttribute('aria-invalid')); };
  const fail = (text, id = null) => {
    error.textContent = text;
    error.hidden = false;
    const at = id ? form.querySelector(`#${id}`) : null;
    if (at) { at.setAttribute('aria-invalid', 'true'); at.focus(); } else error.focus();
  };
  const load = () => fill(out, () => session.client.tokens(),
    (list) => [tokenTable(list.filter((t) => covers(t, session.org)), load, status)]);
  let busy = false;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (busy) return;
    clear();
    const v = (id) => String(form.elements.namedItem(id).value).trim();
    const name = v('t-name');
    if (!name) { fail('Give the token a name', 't-name'); return; }
    const body = { name, roles: [v('t-role')], orgs: [scope] };
    if (v('t-days')) {
      const days = /^\d+$/.test(v('t-days')) ? Number(v('t-days')) : NaN;
      if (!(days >= 1 && days <= 3650)) { fail('Expiry must be a whole number of days from 1 to 3650', 't-days'); return; }
      body.expires_in_days = days;
    }
    const cidrs = v('t-cidrs').split(',').map((c) => c.trim()).filter(Boolean);
    if (cidrs.length > 50) { fail('At most 50 networks', 't-cidrs'); return; }
    if (cidrs.length) body.cidrs = cidrs;
    busy = true;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    let created;
    try {
      created = await session.client.createToken(body);
    } catch (e) {
      if (e instanceof KeysafeError && e.status === 401) { signOut('Your session has expired: sign in again.'); return; }
      const text = e.detail || String(e);
      fail(text, /network|cidr/i.test(text) ? 't-cidrs' : /name/i.test(text) ? 't-name' : null);
      return;
    } finally {
      busy = false;
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
    if (!made.isConnected) {
      // The page moved on while the token was made: nobody can see it, so nobody keeps it.
      session.client.revokeToken(created.id).catch(() => {});
      return;
    }
    form.reset();
    showOnce(made, created);
    load();
  });
  load();
  return h('section', { 'aria-labelledby': 'tokens-title' },
    h('h2', { class: 'section-title', id: 'tokens-title', text: `Tokens for ${scope}` }),
    h('p', { class: 'hint', text: 'A token is shown once, when it is made; keysafe keeps only its hash. Revoking one takes effect at once.' }),
    form, made, status, out);
}

// The new token, once: a read-only field and Copy, until "Done" (or leaving the tab) drops it.
function showOnce(made, created) {
  const value = h('input', { id: 'token-value', type: 'text', readonly: true,
    'aria-label': `Token ${created.name}`, autocomplete: 'off', spellcheck: 'false' });
  value.value = created.token; // a property, not an attribute: nothing in the markup
  const copied = h('p', { class: 'hint', id: 'token-copied', role: 'status' });
  // What the server made may differ from what was asked: an expiry capped at the
  // creator's own, the creator's networks when none were given.
  const terms = [`for ${created.orgs ? created.orgs.join(', ') : 'every org'}`,
    `in the ${created.env || 'any'} environment`,
    created.expires_at ? `until ${when(created.expires_at)}` : 'with no expiry',
    created.cidrs ? `from ${created.cidrs.join(', ')} only` : 'from any address'];
  made.replaceChildren(h('div', { class: 'notice', id: 'token-once' },
    h('p', {}, h('strong', { text: `Token ${created.name} (${created.roles.join(', ')})` }),
      ` ${terms.join(', ')}. It is shown this once: copy it now.`),
    value,
    h('div', { class: 'tabs' },
      h('button', { type: 'button', id: 'token-copy', text: 'Copy',
        onclick: async () => {
          try { await navigator.clipboard.writeText(value.value); copied.textContent = 'Copied (it stays on your clipboard until you copy something else).'; } catch { value.select(); copied.textContent = 'Select and copy it by hand.'; }
        } }),
      h('button', { type: 'button', class: 'primary', id: 'token-done', text: 'Done',
        onclick: () => { value.value = ''; made.replaceChildren(); focusFirst('#t-name'); } })),
    copied));
  value.focus();
  value.select();
}

function tokenTable(list, reload, status) {
  if (!list.length) return h('p', { class: 'notice', text: `No tokens cover ${session.org} yet.` });
  const row = (t) => {
    const expired = t.expires_at && Date.parse(t.expires_at) <= Date.now();
    const state = t.revoked_at ? `revoked ${when(t.revoked_at)}`
      : expired ? `expired ${when(t.expires_at)}`
        : t.expires_at ? `expires ${when(t.expires_at)}` : 'active';
    const orgs = t.orgs ? t.orgs.join(', ') : 'every org';
    const cell = h('td', {});
    const mine = session.identity.token_id ? session.identity.token_id === t.id
      : session.identity.kind === 'token' && session.identity.name === t.name;
    if (mine) cell.append(h('span', { class: 'hint', text: 'this session' }));
    else if (!t.revoked_at) {
      const revoke = h('button', { type: 'button', text: 'Revoke', 'aria-label': `Revoke ${t.name}` });
      revoke.addEventListener('click', () => {
        let sent = false;
        const yes = h('button', { type: 'button', class: 'primary', text: 'Yes, revoke',
          'aria-label': `Yes, revoke ${t.name}, which covers ${orgs}`,
          onclick: async () => {
            if (sent) return;
            sent = true;
            let answer;
            try {
              answer = await session.client.revokeToken(t.id);
            } catch (e) {
              if (e instanceof KeysafeError && e.status === 401) { signOut('Your session has expired: sign in again.'); return; }
              cell.replaceChildren(h('span', { class: 'field-error', role: 'alert', text: e.detail || String(e) }), ' ', revoke);
              revoke.focus();
              return;
            }
            status.textContent = answer && answer.already_revoked ? `${t.name} was already revoked` : `Revoked ${t.name}`;
            await reload();
            focusFirst('#token-table');
          } });
        const no = h('button', { type: 'button', text: 'Cancel', onclick: () => { cell.replaceChildren(revoke); revoke.focus(); } });
        cell.replaceChildren(yes, ' ', no);
        yes.focus();
      });
      cell.replaceChildren(revoke);
    }
    return h('tr', {}, h('td', { text: t.name }), h('td', { text: t.roles.join(', ') }),
      h('td', { class: t.orgs ? 'path' : null, text: orgs }),
      h('td', { class: t.cidrs ? 'path' : null, text: t.cidrs ? t.cidrs.join(', ') : 'any' }),
      h('td', { text: `${when(t.created_at)} by ${t.created_by}` }),
      h('td', { text: t.last_used_at ? when(t.last_used_at) : 'never' }),
      h('td', { class: `outcome ${t.revoked_at || expired ? 'bad' : 'ok'}`, text: state }), cell);
  };
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Tokens', id: 'token-table' },
    h('table', { class: 'audit' },
      h('caption', { text: `${list.length} token${list.length === 1 ? '' : 's'} covering ${session.org}` }),
      h('thead', {}, h('tr', {}, ['Name', 'Roles', 'Orgs', 'Networks', 'Created', 'Last used', 'State']
        .map((c) => h('th', { scope: 'col', text: c })), h('th', { scope: 'col' }, h('span', { class: 'sr-only', text: 'Action' })))),
      h('tbody', {}, list.map(row))));
}

signInView();
