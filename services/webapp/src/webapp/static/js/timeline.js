// The timeline: tweets newest first with live product cards, Follow buttons, and Buy.
// At /m/<merchant_id>, one shop's page: only its tweets, with the same Buy sheet.

import { api, buyerId, el, money, notice, stockLabel, timeAgo } from "./common.js";
import { openSheet } from "./buy.js";

const PAGE_SIZE = 10;
const list = document.getElementById("timeline");
const empty = document.getElementById("timeline-empty");
const more = document.getElementById("load-more");
const banner = document.getElementById("timeline-notice");
const tabs = { following: document.getElementById("tab-following"), everyone: document.getElementById("tab-everyone") };

const state = { tab: "everyone", cursor: null, loading: false, done: false, follows: new Set(), generation: 0 };
const shopPage = location.pathname.match(/^\/m\/([^/]+)\/?$/);
const shopId = shopPage ? decodeURIComponent(shopPage[1]) : null;

function avatar(merchant) {
  const name = (merchant && merchant.name) || "?";
  return el("div", { class: "avatar", "aria-hidden": "true", text: name.trim().charAt(0).toUpperCase() });
}

function followButton(merchantId) {
  const following = state.follows.has(merchantId);
  return el("button", {
    class: following ? "follow following" : "follow",
    "aria-pressed": following ? "true" : "false",
    dataset: { merchantId },
    text: following ? "Following" : "Follow",
    onclick: () => toggleFollow(merchantId),
  });
}

function productCard(tweet) {
  const p = tweet.product;
  const [label, kind] = stockLabel(p);
  const buy = el("button", {
    class: "primary buy",
    text: tweet.buyable ? "Buy" : kind === "out" && p.status === "active" ? "Sold out" : "Unavailable",
    disabled: !tweet.buyable,
    onclick: () => openSheet(tweet.id),
  });
  return el(
    "div",
    { class: `product-card ${tweet.buyable ? "" : "unavailable"}` },
    p.image_url ? el("img", { src: p.image_url, alt: "", loading: "lazy", class: "product-image" }) : null,
    el(
      "div",
      { class: "product-info" },
      el("div", { class: "product-title", text: p.title }),
      el("div", { class: "price", text: money(p.price_minor, p.currency) }),
      el("div", { class: `stock ${kind}`, text: label }),
    ),
    buy,
  );
}

function renderTweet(tweet) {
  const m = tweet.merchant;
  return el(
    "article",
    { class: "tweet", dataset: { tweetId: tweet.id, merchantId: tweet.merchant_id } },
    avatar(m),
    el(
      "div",
      { class: "tweet-body" },
      el(
        "header",
        { class: "tweet-head" },
        el(
          "div",
          { class: "who" },
          el("a", { class: "plain", href: `/m/${encodeURIComponent(tweet.merchant_id)}` }, el("strong", { text: m ? m.name : "A shop" })),
          el("span", { class: "muted", text: ` ${m ? "@" + m.handle : ""} · ` }),
          // The tweet's own page: the link to share.
          el("a", { class: "muted plain", href: `/t/${encodeURIComponent(tweet.id)}`, text: timeAgo(tweet.created_at) }),
        ),
        followButton(tweet.merchant_id),
      ),
      el("p", { class: "tweet-text", text: tweet.text }),
      tweet.product ? productCard(tweet) : null,
    ),
  );
}

async function toggleFollow(merchantId) {
  const following = state.follows.has(merchantId);
  try {
    if (following) {
      const query = new URLSearchParams({ buyer_id: buyerId(), merchant_id: merchantId });
      await api(`/feed/follows?${query}`, { method: "DELETE" });
      state.follows.delete(merchantId);
    } else {
      await api("/feed/follows", { method: "POST", body: { buyer_id: buyerId(), merchant_id: merchantId } });
      state.follows.add(merchantId);
    }
    notice(banner, "");
  } catch (error) {
    notice(banner, error.message);
    return;
  }
  for (const button of document.querySelectorAll(`button.follow[data-merchant-id="${CSS.escape(merchantId)}"]`)) {
    button.replaceWith(followButton(merchantId));
  }
}

async function loadPage() {
  if (state.loading || state.done) return;
  state.loading = true;
  const generation = state.generation;
  more.disabled = true;
  list.setAttribute("aria-busy", "true");
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.cursor) query.set("cursor", state.cursor);
  if (state.tab === "following") query.set("buyer_id", buyerId());
  if (shopId) query.set("merchant_id", shopId);
  try {
    const page = await api(`/feed/timeline?${query}`);
    if (generation !== state.generation) return; // the tab changed meanwhile
    for (const tweet of page.tweets) list.append(renderTweet(tweet));
    state.cursor = page.next_cursor;
    state.done = !page.next_cursor;
    notice(banner, "");
    if (!list.children.length) {
      empty.textContent =
        state.tab === "following"
          ? "You don't follow any shop yet. Tap Follow on a tweet in Everyone."
          : "No tweets yet. Shops post here when they have something to sell.";
    }
    empty.hidden = list.children.length > 0;
  } catch (error) {
    if (generation !== state.generation) return;
    notice(banner, `${error.message}`);
    banner.append(" ", el("button", { class: "link", text: "Retry", onclick: () => loadPage() }));
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      more.hidden = state.done;
      more.disabled = false;
      list.setAttribute("aria-busy", "false");
    }
  }
}

function showTab(tab) {
  state.tab = tab;
  state.cursor = null;
  state.done = false;
  state.loading = false;
  state.generation += 1;
  list.replaceChildren();
  empty.hidden = true;
  for (const [name, button] of Object.entries(tabs)) button.setAttribute("aria-selected", String(name === tab));
  loadPage();
}

async function loadFollows() {
  try {
    const found = await api(`/feed/follows?${new URLSearchParams({ buyer_id: buyerId() })}`);
    state.follows = new Set(found.following.map((f) => f.merchant.id));
  } catch {
    state.follows = new Set(); // the timeline still works; Follow buttons start as "Follow"
  }
}

async function start() {
  tabs.following.addEventListener("click", () => showTab("following"));
  tabs.everyone.addEventListener("click", () => showTab("everyone"));
  more.addEventListener("click", () => loadPage());
  // The next page comes by itself when the end of the list scrolls into view.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && list.children.length) loadPage();
  }).observe(document.getElementById("timeline-end"));

  await loadFollows();
  if (shopId) {
    // One shop's page: its tweets only; no Following tab to switch to.
    document.querySelector(".tabs").hidden = true;
    showTab("everyone");
  } else showTab(state.follows.size ? "following" : "everyone");
  const wanted = new URLSearchParams(location.search).get("buy");
  if (wanted) openSheet(wanted);
}

start();
