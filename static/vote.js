// The voting page: POST /api/vote on click, poll GET /api/votes for live counts.
// Polling (not SSE/WebSockets): one request in flight at most, paused while the tab is hidden, and the
// server answers an unchanged poll with an empty 304 (ETag), so it costs next to nothing.
(() => {
  "use strict";

  const VOTE_URL = "/api/vote";
  const VOTES_URL = "/api/votes";
  const MAX_BACKOFF_MS = 15000;

  const root = document.querySelector(".poll");
  const interval = Number(root.dataset.pollInterval) || 1000;
  const errorBox = document.getElementById("vote-error");
  const totalEl = document.getElementById("total");
  const liveEl = document.getElementById("live");
  const cards = new Map(
    Array.from(document.querySelectorAll(".card"), (card) => [card.dataset.option, card]),
  );

  // Bumped by every successful vote: a poll that started earlier carries older counts and is dropped.
  let epoch = 0;
  let failures = 0;
  let timer = 0;
  let polling = false;

  function render(counts) {
    let total = 0;
    for (const option of cards.keys()) total += counts[option] || 0;
    for (const [option, card] of cards) {
      const n = counts[option] || 0;
      const pct = total ? Math.round((100 * n) / total) : 0;
      card.querySelector(".n").textContent = String(n);
      card.querySelector(".unit").textContent = n === 1 ? "vote" : "votes";
      card.querySelector(".pct").textContent = pct + "%";
      card.querySelector(".fill").style.width = pct + "%";
    }
    totalEl.textContent = String(total);
  }

  function markChoice(option) {
    for (const [name, card] of cards) {
      const on = name === option;
      card.classList.toggle("chosen", on);
      card.querySelector(".vote").setAttribute("aria-pressed", String(on));
    }
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  async function vote(option, button) {
    if (button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-busy", "true");
    try {
      let response;
      try {
        response = await fetch(VOTE_URL, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ option }),
          credentials: "same-origin",
        });
      } catch {
        throw new Error("could not reach the server. Check your connection and try again.");
      }
      const body = await response.json().catch(() => null);
      if (!response.ok || !body || typeof body.votes !== "object") {
        const reason = body && typeof body.message === "string" ? body.message : `HTTP ${response.status}`;
        // The server's text tells API clients about headers; a browser user needs to hear about cookies.
        if (/^<Error> (Missing|Invalid) voter id/.test(reason)) {
          throw new Error("this browser sent no valid voter cookie. Allow cookies for this site and reload the page.");
        }
        throw new Error(reason.replace(/^<Error>\s*/, ""));
      }
      epoch += 1;
      render(body.votes);
      markChoice(option);
      showError("");
    } catch (err) {
      showError(`Your vote was not counted: ${err.message}`);
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  function setLive(ok) {
    liveEl.textContent = ok ? "Live" : "Reconnecting…";
    liveEl.classList.toggle("offline", !ok);
  }

  async function poll() {
    if (polling) return; // the running poll schedules the next one
    polling = true;
    const started = epoch;
    try {
      // no-cache: revalidate with the stored ETag; an unchanged tally comes back as a 304.
      const response = await fetch(VOTES_URL, { headers: { Accept: "application/json" }, cache: "no-cache" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const counts = await response.json();
      if (started === epoch) render(counts);
      failures = 0;
      setLive(true);
    } catch {
      failures += 1;
      setLive(false);
    } finally {
      polling = false;
      schedule();
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (document.hidden) return;
    const delay = failures ? Math.min(interval * 2 ** failures, MAX_BACKOFF_MS) : interval;
    timer = setTimeout(poll, delay);
  }

  for (const [option, card] of cards) {
    const button = card.querySelector(".vote");
    button.addEventListener("click", () => vote(option, button));
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else poll();
  });
  schedule();
})();
