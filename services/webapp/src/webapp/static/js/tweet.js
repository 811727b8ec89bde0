// One tweet on a page of its own (/t/<tweet_id>): the link a merchant shares. Its product card's Buy opens the
// same sheet as the timeline's (buy.js), one tap for a returning buyer with a saved card and address.

import { api, el, money, notice, stockLabel, timeAgo } from "./common.js";
import { openSheet } from "./buy.js";

const list = document.getElementById("timeline");
const banner = document.getElementById("timeline-notice");
const tweetId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");

function productCard(tweet) {
  const p = tweet.product;
  const [label, kind] = stockLabel(p);
  return el(
    "div",
    { class: `product-card ${tweet.buyable ? "" : "unavailable"}` },
    p.image_url ? el("img", { src: p.image_url, alt: "", class: "product-image" }) : null,
    el(
      "div",
      { class: "product-info" },
      el("div", { class: "product-title", text: p.title }),
      el("div", { class: "price", text: money(p.price_minor, p.currency) }),
      el("div", { class: `stock ${kind}`, text: label }),
    ),
    el("button", {
      class: "primary buy",
      text: tweet.buyable ? "Buy" : kind === "out" && p.status === "active" ? "Sold out" : "Unavailable",
      disabled: !tweet.buyable,
      onclick: () => openSheet(tweet.id),
    }),
  );
}

function renderTweet(tweet) {
  const m = tweet.merchant;
  const name = (m && m.name) || "A shop";
  return el(
    "article",
    { class: "tweet", dataset: { tweetId: tweet.id, merchantId: tweet.merchant_id } },
    el("div", { class: "avatar", "aria-hidden": "true", text: name.trim().charAt(0).toUpperCase() }),
    el(
      "div",
      { class: "tweet-body" },
      el(
        "header",
        { class: "tweet-head" },
        el(
          "div",
          { class: "who" },
          // The shop's own page: its other tweets, with the same Buy.
          el("a", { class: "plain", href: `/m/${encodeURIComponent(tweet.merchant_id)}` }, el("strong", { text: name })),
          el("span", { class: "muted", text: ` ${m ? "@" + m.handle : ""} · ${timeAgo(tweet.created_at)}` }),
        ),
      ),
      el("p", { class: "tweet-text", text: tweet.text }),
      tweet.product ? productCard(tweet) : null,
    ),
  );
}

async function start() {
  try {
    const tweet = await api(`/feed/tweets/${encodeURIComponent(tweetId)}`);
    list.replaceChildren(renderTweet(tweet));
    document.title = `tweetshop · ${(tweet.merchant && tweet.merchant.name) || "Tweet"}`;
    if (new URLSearchParams(location.search).has("buy") && tweet.buyable) openSheet(tweet.id);
  } catch (error) {
    notice(banner, error.status === 404 || error.status === 422 ? "This tweet does not exist (any more)." : error.message);
  } finally {
    list.setAttribute("aria-busy", "false");
  }
}

start();
