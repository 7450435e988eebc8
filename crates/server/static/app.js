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
