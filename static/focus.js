// Keyboard focus when the focused control disappears (WAI-ARIA APG: after a delete, focus the next item; after
// a dialog closes, the control that opened it). Removing a focused element drops the focus to <body>, so a
// keyboard or screen-reader user would start over from the top of the page: after each click, key or change that
// removed the focused control, focus moves to
//   - the same control (same tag, same first word of its name) of the item now at its place in the same list, or
//     the list's last item when the removed one was last;
//   - the control focused before a dialog (role="alertdialog") that was closed;
//   - else the panel (<section>) it was in, else <main>: the next Tab continues from there.
// Plain JS beside the app: in the wasm it would cost more of the bundle's budget than it is long.
{
  let last, prev, list, index, word, section, dialog;
  const name = (el) => ((el.getAttribute && el.getAttribute('aria-label')) || el.textContent || '').trim().split(' ')[0];
  document.addEventListener('focusin', (e) => {
    if (e.target === last) return;
    const inDialog = e.target.closest('[role=alertdialog]');
    if (!inDialog || !dialog) prev = last;
    last = e.target;
    dialog = inDialog;
    const li = last.closest('li');
    list = li && li.parentElement;
    index = li ? Array.prototype.indexOf.call(list.children, li) : -1;
    word = name(last);
    section = last.closest('section') || document.querySelector('main');
  });
  const CONTROLS = 'button, input, select, textarea, a[href], summary';
  const fix = () => setTimeout(() => {
    const active = document.activeElement;
    if (!last || last.isConnected || (active && active !== document.body)) return;
    let to;
    if (list && list.isConnected && list.children.length) {
      const item = list.children[Math.min(index, list.children.length - 1)];
      const controls = Array.from(item.querySelectorAll(CONTROLS));
      to = controls.find((c) => c.tagName === last.tagName && name(c) === word) || controls[0];
    }
    if (!to && dialog && prev && prev.isConnected) to = prev;
    if (!to) to = [section, document.querySelector('main')].find((s) => s && s.isConnected);
    if (!to) return;
    if (!to.matches(CONTROLS) && !to.hasAttribute('tabindex')) to.setAttribute('tabindex', '-1');
    to.focus();
  }, 0);
  for (const type of ['click', 'keydown', 'change']) document.addEventListener(type, fix, true);
}
