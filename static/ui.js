// Two things a page that changes under the user must get right, as plain JS beside the app (in the wasm they
// would cost more of the bundle's budget than they are long).
//
// 1. A click must land where it was aimed. An error shown when a field is left ([role=alert]: a refused number,
//    a variable's bad value, a generator's) appears during the press on the button that left the field (with a
//    mouse at the press, with a finger between the release and the click) and moves that button from under the
//    pointer: the click would be lost. While a press is under way, alerts that appear are kept hidden; they show
//    when the press ends: after its click, 400 ms after its release when no click follows (dragged off), or at
//    once when it is cancelled, opens a context menu, starts a drag, or a key is pressed. The press under way is
//    marked on <html> (data-pressing) and its end announced (a "hubsim-press-end" event): the app's number fields
//    wait for it to show their refusals and to take them away (`components::press`). An alert that goes during a
//    press (an error of the app that the change leaving the field fixed) would move the button up the same way:
//    its place is kept by an invisible copy until the press ends.
//
// 2. Keyboard focus when the focused control disappears or is disabled (WAI-ARIA APG: after a delete, focus the
//    next item; after a dialog closes, the control that opened it). The browser drops the focus to <body>, and a
//    keyboard or screen-reader user would start over from the top of the page. Instead the focus moves to
//    - the control that opened a dialog (role="alertdialog") that was closed;
//    - else the control now nearest to where it was: from its closest container still in the page (up to its
//      panel), among that container's children from the old place outwards, the same kind of control with the
//      same first word of its name one place away (the previous row's Remove after the last row), else the
//      first usable control (the Start that replaced Stop, the next row's);
//    - else its panel (<section>), then <main>.
//    Never scrolling: the app may remove a control while the user reads elsewhere (a repeat that ends replaces
//    Stop by Start). Focus the user moved away (to another control, or to empty space) is left alone.
{
  // ---- 1. presses ----
  let pressing = false, held = [], placeholders = [], shown = new Set(), fallback;
  const root = document.documentElement;
  const release = () => {
    if (!pressing) return;
    pressing = false;
    delete root.dataset.pressing;
    clearTimeout(fallback);
    for (const el of held) el.style.removeProperty('display');
    for (const el of placeholders) el.remove();
    held = [];
    placeholders = [];
    shown = new Set();
    dispatchEvent(new Event('hubsim-press-end'));
  };
  addEventListener('pointerdown', () => {
    pressing = true;
    root.dataset.pressing = '';
    clearTimeout(fallback);
    // The alerts on screen as the press starts: the ones whose place is kept if they go.
    shown = new Set(document.querySelectorAll('[role=alert]'));
  }, true);
  addEventListener('pointerup', () => { fallback = setTimeout(release, 400); }, true);
  addEventListener('click', () => { if (pressing) setTimeout(release, 0); }, true);
  for (const t of ['pointercancel', 'contextmenu', 'dragstart', 'keydown']) addEventListener(t, release, true);
  const hold = (node) => {
    if (!pressing || node.nodeType !== 1) return;
    for (const a of node.matches('[role=alert]') ? [node] : node.querySelectorAll('[role=alert]')) {
      a.style.display = 'none';
      held.push(a);
    }
  };
  // An alert on screen at the press removed from `parent` (before `next`): an invisible copy takes its place
  // (same element and class, so the same box; no role, id or label to announce or find).
  const keepPlace = (node, parent, next) => {
    if (!pressing || !shown.has(node) || !parent.isConnected) return;
    const copy = node.cloneNode(true);
    for (const el of [copy, ...copy.querySelectorAll('*')]) {
      for (const a of ['role', 'id', 'aria-live', 'aria-describedby']) el.removeAttribute(a);
    }
    copy.setAttribute('aria-hidden', 'true');
    copy.style.visibility = 'hidden';
    parent.insertBefore(copy, next && next.parentNode === parent ? next : null);
    placeholders.push(copy);
  };

  // ---- 2. focus ----
  const CONTROLS = 'button, input, select, textarea, a[href], summary';
  const word = (el) => ((el.getAttribute && el.getAttribute('aria-label')) || el.textContent || '').trim().split(' ')[0];
  // The focused control's ancestors, each with the index of the previous one among its children.
  let chain = [], opener, dialog, checking = false;
  document.addEventListener('focusin', (e) => {
    const el = e.target;
    const inDialog = el.closest('[role=alertdialog]');
    if (inDialog && !dialog && chain.length) opener = chain[0].el;
    dialog = inDialog;
    chain = [{ el, index: -1 }];
    for (let c = el; c.parentElement && c !== document.body; c = c.parentElement) {
      chain.push({ el: c.parentElement, index: Array.prototype.indexOf.call(c.parentElement.children, c) });
    }
  });
  // Focus the user moved to empty space: forget the control, whatever happens to it later.
  document.addEventListener('focusout', (e) => {
    const el = e.target;
    setTimeout(() => {
      if (chain.length && chain[0].el === el && el.isConnected && !el.disabled && document.activeElement !== el) chain = [];
    }, 0);
  }, true);
  const usable = (kid) => (kid.matches(CONTROLS) ? [kid] : Array.from(kid.querySelectorAll(CONTROLS))).filter((c) => !c.disabled);
  const nearest = () => {
    const gone = chain[0].el;
    for (let i = 1; i < chain.length; i++) {
      const { el: box, index } = chain[i];
      if (!box.isConnected) continue;
      const kids = box.children;
      const at = (j) => (kids[j] && kids[j] !== gone ? usable(kids[j]) : []);
      for (const j of [index, index + 1, index - 1]) {
        const same = at(j).find((c) => c.tagName === gone.tagName && word(c) === word(gone));
        if (same) return same;
      }
      for (let d = 0; d <= kids.length; d++) {
        for (const j of d ? [index + d, index - d] : [index]) {
          const c = at(j).find((c) => c !== gone);
          if (c) return c;
        }
      }
      if (box.tagName === 'SECTION' || box.tagName === 'MAIN') return null;
    }
    return null;
  };
  const check = () => {
    checking = false;
    if (!chain.length) return;
    const el = chain[0].el, active = document.activeElement;
    if ((el.isConnected && !el.disabled) || (active && active !== document.body && active !== el)) return;
    const was = chain;
    let to = dialog && !dialog.isConnected && opener && opener.isConnected ? opener : nearest();
    if (!to) {
      to = [...was.map((c) => c.el).filter((c) => c.tagName === 'SECTION'), document.querySelector('main')]
        .find((s) => s && s.isConnected);
      if (to && !to.hasAttribute('tabindex')) to.setAttribute('tabindex', '-1');
    }
    chain = [];
    if (to) to.focus({ preventScroll: true });
  };

  new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) hold(n);
      for (const n of r.removedNodes) keepPlace(n, r.target, r.nextSibling);
    }
    if (!checking && chain.length) {
      checking = true;
      setTimeout(check, 0);
    }
  }).observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ['disabled'] });
}
