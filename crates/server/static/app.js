// Progressive enhancement only: every page works without this module.

// "Show password" checkboxes reveal the field named in data-reveals.
for (const box of document.querySelectorAll('input[type=checkbox][data-reveals]')) {
  const field = document.getElementById(box.dataset.reveals);
  if (!field) continue;
  box.addEventListener('change', () => {
    field.type = box.checked ? 'text' : 'password';
  });
}

// Forms marked data-once disable their submit button after the first submit, so a slow
// connection does not turn one tap into several sign-in attempts.
for (const form of document.querySelectorAll('form[data-once]')) {
  form.addEventListener('submit', () => {
    for (const button of form.querySelectorAll('button[type=submit]')) {
      button.disabled = true;
      button.setAttribute('aria-busy', 'true');
    }
  });
}

// Move focus to an error summary so screen-reader users hear what went wrong.
const alert = document.querySelector('[role=alert]');
if (alert) {
  alert.tabIndex = -1;
  alert.focus();
}

// Passkeys (WebAuthn). The server sends binary fields as base64url and expects them back
// the same way; the browser API works in ArrayBuffers. Converted by hand because the
// browser's own JSON helpers (parseCreationOptionsFromJSON, toJSON) are not yet in every
// browser our patients use.
const fromB64url = (s) => {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer;
};
const toB64url = (buf) => {
  let bin = '';
  for (const byte of new Uint8Array(buf)) bin += String.fromCharCode(byte);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};
const withIds = (list) => (list || []).map((c) => ({ ...c, id: fromB64url(c.id) }));

function creationOptions(o) {
  const pk = o.publicKey;
  return {
    publicKey: {
      ...pk,
      challenge: fromB64url(pk.challenge),
      user: { ...pk.user, id: fromB64url(pk.user.id) },
      excludeCredentials: withIds(pk.excludeCredentials),
    },
  };
}

function requestOptions(o) {
  const pk = o.publicKey;
  return { publicKey: { ...pk, challenge: fromB64url(pk.challenge), allowCredentials: withIds(pk.allowCredentials) } };
}

function attestationJSON(c) {
  return {
    id: c.id,
    rawId: toB64url(c.rawId),
    type: c.type,
    response: {
      clientDataJSON: toB64url(c.response.clientDataJSON),
      attestationObject: toB64url(c.response.attestationObject),
    },
    clientExtensionResults: c.getClientExtensionResults(),
  };
}

function assertionJSON(c) {
  const r = c.response;
  return {
    id: c.id,
    rawId: toB64url(c.rawId),
    type: c.type,
    response: {
      clientDataJSON: toB64url(r.clientDataJSON),
      authenticatorData: toB64url(r.authenticatorData),
      signature: toB64url(r.signature),
      userHandle: r.userHandle ? toB64url(r.userHandle) : null,
    },
    clientExtensionResults: c.getClientExtensionResults(),
  };
}

class StepUpNeeded extends Error {}

async function postJSON(url, body, csrf) {
  const headers = { 'Content-Type': 'application/json' };
  if (csrf) headers['X-CSRF-Token'] = csrf;
  const resp = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin' });
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 403 && data.code === 'step_up_required') {
    window.location.assign(resp.headers.get('Location') || '/mfa/step-up');
    throw new StepUpNeeded();
  }
  if (!resp.ok) throw new Error(data.message || 'Something went wrong. Please try again.');
  return data;
}

function sentence(msg) {
  const m = String(msg).trim();
  return m ? m[0].toUpperCase() + m.slice(1) + (/[.!?]$/.test(m) ? '' : '.') : m;
}

// Wires one passkey block: its button runs `ceremony` and reports failures in the block's
// status line, in words a person can act on.
function passkeyBlock(block, ceremony) {
  if (!window.PublicKeyCredential) return;
  block.hidden = false;
  const button = block.querySelector('[data-passkey-start]');
  const status = block.querySelector('[data-passkey-status]');
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    status.className = 'passkey-status';
    status.textContent = 'Follow the instructions from your browser or device…';
    try {
      const { next } = await ceremony(block);
      status.textContent = 'Done.';
      window.location.assign(next);
    } catch (e) {
      if (e instanceof StepUpNeeded) return;
      status.className = 'passkey-status failed';
      status.textContent =
        e && e.name === 'NotAllowedError'
          ? 'The passkey request was cancelled or timed out. Try again, or use another way.'
          : e && e.name === 'InvalidStateError'
            ? 'This device already holds a passkey for your account.'
            : sentence(e && e.message ? e.message : 'Something went wrong. Please try again.');
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });
}

for (const block of document.querySelectorAll('[data-passkey-signin]')) {
  passkeyBlock(block, async () => {
    const { ceremony, options } = await postJSON('/signin/passkey/options', {});
    const credential = await navigator.credentials.get(requestOptions(options));
    return postJSON('/signin/passkey', { ceremony, credential: assertionJSON(credential) });
  });
}

for (const block of document.querySelectorAll('[data-passkey-verify]')) {
  passkeyBlock(block, async (b) => {
    const csrf = b.dataset.csrf;
    const { ceremony, options } = await postJSON('/mfa/passkey/options', {}, csrf);
    const credential = await navigator.credentials.get(requestOptions(options));
    const body = { ceremony, credential: assertionJSON(credential) };
    if (b.dataset.return) body.return = b.dataset.return;
    return postJSON('/mfa/passkey', body, csrf);
  });
}

for (const block of document.querySelectorAll('[data-passkey-register]')) {
  passkeyBlock(block, async (b) => {
    const csrf = b.dataset.csrf;
    const nameField = b.querySelector('[data-passkey-name]');
    const { ceremony, options } = await postJSON('/account/passkeys/options', {}, csrf);
    const credential = await navigator.credentials.create(creationOptions(options));
    const name = nameField ? nameField.value : '';
    return postJSON('/account/passkeys', { ceremony, name, credential: attestationJSON(credential) }, csrf);
  });
}

// The day's video visits: the waiting room's state refreshes itself every 5 seconds, so a
// clinician sees a patient arrive without reloading (the cells are aria-live).
const dayVisits = document.getElementById('day-visits');
if (dayVisits) {
  const refresh = async () => {
    try {
      const r = await fetch(`/console/visits/status?date=${encodeURIComponent(dayVisits.dataset.date)}`, {
        credentials: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' },
      });
      if (!r.ok) return;
      const { visits } = await r.json();
      for (const v of visits) {
        const row = dayVisits.querySelector(`tr[data-visit="${CSS.escape(v.id)}"]`);
        if (!row) continue;
        const status = row.querySelector('[data-field=status]');
        const waiting = row.querySelector('[data-field=waiting]');
        if (status && status.textContent !== v.status) status.textContent = v.status;
        if (waiting && waiting.textContent !== v.waiting) {
          waiting.replaceChildren();
          if (v.waiting === 'Waiting') {
            const strong = document.createElement('strong');
            strong.textContent = v.waiting;
            waiting.append(strong);
          } else {
            waiting.textContent = v.waiting;
          }
        }
      }
    } catch {
      // Offline for a moment: the next round tries again.
    }
  };
  setInterval(refresh, 5000);
}
