// Keyboard focus when the focused control disappears (WAI-ARIA APG: after a delete, focus the next item; after
// a dialog closes, the control that opened it). Removing a focused element drops the focus to <body>, so a
// keyboard or screen-reader user would start over from the top of the page. When the focused control is removed
// (by a click, a key, or the app: a finished repeat's Stop becomes Start), the focus moves to
//   - the control that opened a dialog (role="alertdialog") that was closed;
//   - else the control now nearest to where it was: its closest container still in the page is found, and among
//     that container's children, from the removed one's place outwards, the first that is or holds a control
//     (the same kind of control, same first word of its name, when that child has one): the next row's remove
//     button, the Start that replaced Stop;
//   - else its panel (<section>), then <main>.
// Never scrolling: the new place is next to the old one, and the app may remove a control while the user reads
// elsewhere (a repeat that ends replaces Stop by Start). Focus that leaves a control any other way (a click on
// empty space) is left alone.
// Plain JS beside the app: in the wasm it would cost more of the bundle's budget than it is long.
{
  const CONTROLS = 'button, input, select, textarea, a[href], summary';
  const word = (el) => ((el.getAttribute && el.getAttribute('aria-label')) || el.textContent || '').trim().split(' ')[0];
  // The focused control's ancestors up to its panel, each with the index of the previous one among its children.
  let chain = [], opener, dialog;
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
  const pick = (kid, like) => {
    const all = kid.matches(CONTROLS) ? [kid] : Array.from(kid.querySelectorAll(CONTROLS));
    const usable = all.filter((c) => !c.disabled);
    return usable.find((c) => c.tagName === like.tagName && word(c) === word(like)) || usable[0];
  };
  const nearest = () => {
    const gone = chain[0].el;
    for (let i = 1; i < chain.length; i++) {
      const { el: box, index } = chain[i];
      if (!box.isConnected) continue;
      const kids = box.children;
      for (let d = 0; d <= kids.length; d++) {
        for (const j of d ? [index + d, index - d] : [index]) {
          const to = kids[j] && pick(kids[j], gone);
          if (to) return to;
        }
      }
      return null; // its container is here but holds no control: the panel
    }
    return null;
  };
  document.addEventListener('focusout', (e) => {
    if (e.relatedTarget || !chain.length || chain[0].el !== e.target) return;
    const wasDialog = dialog, was = chain;
    setTimeout(() => {
      const active = document.activeElement;
      if (chain !== was || was[0].el.isConnected || (active && active !== document.body)) return;
      let to = wasDialog && !wasDialog.isConnected && opener && opener.isConnected ? opener : nearest();
      if (to) return to.focus({ preventScroll: true });
      to = [...was.map((c) => c.el).filter((c) => c.tagName === 'SECTION'), document.querySelector('main')]
        .find((s) => s && s.isConnected);
      if (!to) return;
      if (!to.hasAttribute('tabindex')) to.setAttribute('tabindex', '-1');
      to.focus({ preventScroll: true });
    }, 0);
  }, true);
}
