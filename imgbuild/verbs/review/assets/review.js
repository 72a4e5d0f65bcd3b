// imgbuild review: keyboard (j/k between cards, 1/2/3 compare modes) and the per-card slider.
// Filter and mode are radio buttons that the stylesheet reads, so this only flips them.
(() => {
  "use strict";
  const MODES = { "1": "m-side", "2": "m-swipe", "3": "m-onion" };

  function visibleCards() {
    return Array.from(document.querySelectorAll("main > .card")).filter(
      (card) => getComputedStyle(card).display !== "none");
  }

  function step(by) {
    const cards = visibleCards();
    if (!cards.length) return;
    const current = cards.indexOf(document.activeElement && document.activeElement.closest(".card"));
    let next = current < 0 ? (by > 0 ? 0 : cards.length - 1) : current + by;
    next = Math.max(0, Math.min(cards.length - 1, next));
    cards[next].focus({ preventScroll: true });
    cards[next].scrollIntoView({ block: "start" });
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    if (target instanceof HTMLInputElement && !["radio", "range"].includes(target.type)) return;
    if (event.key === "j") step(1);
    else if (event.key === "k") step(-1);
    else if (MODES[event.key]) document.getElementById(MODES[event.key]).checked = true;
    else return;
    event.preventDefault();
  });

  // One slider per card: the swipe position and the onion-skin opacity of the after-image.
  document.addEventListener("input", (event) => {
    const slider = event.target;
    if (!(slider instanceof HTMLInputElement) || !slider.classList.contains("slider")) return;
    const card = slider.closest(".card");
    card.style.setProperty("--pos", slider.value + "%");
    card.style.setProperty("--mix", String(slider.value / 100));
  });
})();
