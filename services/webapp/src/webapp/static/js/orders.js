// My orders: the buyer account's orders (from checkout, through this browser's HttpOnly cookie), merged with the
// ones this browser remembers from before accounts (ids and tokens in localStorage); linking another device with
// a one-time code; signing out everywhere.

import { api, cardLabel, el, ensureBuyer, linkWithCode, money, myOrders, notice, signOutEverywhere } from "./common.js";

const $ = (id) => document.getElementById(id);

const STATUS = {
  pending: ["Paying…", "pending"],
  requires_action: ["Confirm with your bank", "action"],
  paid: ["Paid", "paid"],
  failed: ["Declined", "failed"],
  cancelled: ["Cancelled", "failed"],
  refunded: ["Refunded", "refunded"],
};
const PAGE = 50;

const list = $("orders");
const state = { buyer: null, cursor: null, shown: new Set() };

function card(record) {
  const status = el("span", { class: "badge pending", text: "…" });
  const refund = el("span", { class: "muted small" });
  const links = el("div", { class: "links" }, el("a", { href: `/orders/${encodeURIComponent(record.id)}`, text: "Details" }));
  const node = el(
    "article",
    { class: "order-card", dataset: { orderId: record.id } },
    record.image_url ? el("img", { src: record.image_url, alt: "", class: "thumb", loading: "lazy" }) : el("div", { class: "thumb" }),
    el(
      "div",
      { class: "order-info" },
      el("div", { class: "row" }, el("strong", { text: record.title || "Order" }), status),
      el(
        "div",
        { class: "row muted small" },
        el("span", {
          class: "amount",
          text: `Qty ${record.quantity || 1} · ${money(record.amount_minor, record.currency)}`,
        }),
        el("span", { text: new Date(record.placed_at).toLocaleDateString(undefined, { day: "numeric", month: "short" }) }),
      ),
      el("div", { class: "row" }, refund, links),
    ),
  );
  return { node, status, refund, links };
}

function show(order, view) {
  const [label, kind] = STATUS[order.status] || [order.status, "pending"];
  view.status.textContent = label;
  view.status.className = `badge ${kind}`;
  view.node.querySelector(".amount").textContent = `Qty ${order.quantity} · ${money(order.amount_minor, order.currency)}`;
  if (order.refunded_minor > 0) {
    view.refund.textContent =
      order.status === "refunded"
        ? `${money(order.refunded_minor, order.currency)} refunded`
        : `${money(order.refunded_minor, order.currency)} of ${money(order.amount_minor, order.currency)} refunded`;
  } else if (order.status === "failed" && order.failure_reason) {
    view.refund.textContent = order.failure_reason;
  }
  if (order.tracking_url) view.links.append(el("a", { href: order.tracking_url, text: "Track" }));
}

async function fill(record, view) {
  try {
    show(await api(`/checkout/orders/${encodeURIComponent(record.id)}`, { token: record.access_token }), view);
  } catch (error) {
    view.status.textContent = error.isNetwork ? "Offline" : "Unavailable";
    view.status.className = "badge failed";
    view.refund.textContent = error.isNetwork ? "Can't reach tweetshop right now." : error.message;
  }
}

/** A card for an order of the account (its live view is in the list's answer already). */
function addAccountOrder(order, remembered) {
  const local = remembered.get(order.id) || {};
  const view = card({
    ...local,
    id: order.id,
    quantity: order.quantity,
    amount_minor: order.amount_minor,
    currency: order.currency,
    placed_at: order.created_at,
  });
  show(order, view);
  state.shown.add(order.id);
  return view.node;
}

/** The account's next page of orders; false when this browser is not signed in. */
async function loadAccountPage(remembered) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (state.cursor) query.set("cursor", state.cursor);
  const page = await api(`/checkout/buyers/me/orders?${query}`);
  list.append(...page.orders.filter((o) => !state.shown.has(o.id)).map((o) => addAccountOrder(o, remembered)));
  state.cursor = page.next_cursor;
  $("orders-more").hidden = !state.cursor;
}

async function render() {
  notice($("orders-notice"), "");
  list.replaceChildren();
  state.shown = new Set();
  state.cursor = null;
  const records = myOrders();
  const remembered = new Map(records.map((r) => [r.id, r]));
  if (state.buyer) {
    try {
      await loadAccountPage(remembered);
    } catch (error) {
      notice($("orders-notice"), error.isNetwork ? "Some orders could not be loaded: check your connection." : error.message);
    }
  }
  // Orders this browser placed before it had an account (or while it could not reach it): read with their tokens.
  const older = records.filter((r) => !state.shown.has(r.id));
  const views = older.map((record) => [record, card(record)]);
  list.append(...views.map(([, view]) => view.node));
  $("orders-empty").hidden = list.children.length > 0;
  // A few at a time: a long history must not fire hundreds of requests at once.
  for (let i = 0; i < views.length; i += 6) {
    await Promise.all(views.slice(i, i + 6).map(([record, view]) => fill(record, view)));
  }
  if (views.some(([, view]) => view.status.textContent === "Offline")) {
    notice($("orders-notice"), "Some orders could not be refreshed: check your connection.");
  }
}

// --- this device and the others -------------------------------------------------------------------------------

function showAccount() {
  const b = state.buyer;
  $("account-status").textContent = b
    ? `Signed in on ${b.devices} device${b.devices === 1 ? "" : "s"}. Your orders follow you to every linked device.`
    : "This device is not signed in: your orders are only in this browser.";
  $("sign-out-everywhere").hidden = !b;
  $("delete-account").hidden = !b;
  if (!b) $("delete-account-confirm").hidden = true;
}

// --- saved cards: listed by checkout from Stripe (brand, last four, expiry), removed there --------------------

async function loadCards() {
  const panel = $("cards");
  const listed = $("saved-cards");
  listed.replaceChildren();
  panel.hidden = !state.buyer;
  if (!state.buyer) return;
  let cards = [];
  try {
    cards = (await api("/checkout/buyers/me/cards")).cards;
  } catch (error) {
    if (error.status !== 401) notice($("cards-notice"), error.message);
    return;
  }
  $("cards-empty").hidden = cards.length > 0;
  for (const c of cards) {
    const expiry = `${String(c.exp_month).padStart(2, "0")}/${String(c.exp_year).slice(-2)}`;
    const remove = el("button", { type: "button", class: "secondary", text: "Remove" });
    remove.setAttribute("aria-label", `Remove ${cardLabel(c)}`);
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try {
        await api(`/checkout/buyers/me/cards/${encodeURIComponent(c.id)}`, { method: "DELETE" });
        notice($("cards-notice"), `${cardLabel(c)} is removed: it can no longer be charged.`, "ok");
      } catch (error) {
        notice($("cards-notice"), error.message);
      }
      await loadCards();
    });
    listed.append(el("li", { class: "saved-card", dataset: { cardId: c.id } }, el("span", { text: `${cardLabel(c)} · expires ${expiry}` }), remove));
  }
}

async function loadBuyer() {
  try {
    state.buyer = await api("/checkout/buyers/me");
  } catch (error) {
    state.buyer = null;
    if (error.status !== 401) notice($("account-notice"), error.message);
  }
  showAccount();
}

$("link-start").addEventListener("click", async () => {
  const box = $("account-notice");
  notice(box, "");
  try {
    if (!state.buyer) state.buyer = await ensureBuyer();
    const code = await api("/checkout/buyers/me/link-codes", { method: "POST" });
    $("link-code").textContent = code.code;
    const until = new Date(code.expires_at).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    $("link-code-expiry").textContent = `Works once, until ${until}.`;
    $("link-code-panel").hidden = false;
    showAccount();
  } catch (error) {
    notice(box, error.message);
  }
});

$("link-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = $("account-notice");
  const input = $("link-code-input");
  notice(box, "");
  try {
    state.buyer = await linkWithCode(input.value);
    input.value = "";
    $("link-code-panel").hidden = true;
    notice(box, "This device is linked: your orders are here now.", "ok");
    showAccount();
    await Promise.all([render(), loadCards()]);
  } catch (error) {
    notice(box, error.status === 401 ? "That code is wrong, expired or already used. Ask your other device for a new one." : error.message);
  }
});

$("sign-out-everywhere").addEventListener("click", async () => {
  const box = $("account-notice");
  notice(box, "");
  try {
    await signOutEverywhere();
  } catch (error) {
    if (error.status !== 401) {
      notice(box, error.message);
      return;
    }
  }
  state.buyer = null;
  $("link-code-panel").hidden = true;
  notice(box, "Signed out on every device. Orders this browser placed itself stay listed here; your next purchase starts a new account.", "ok");
  showAccount();
  await Promise.all([render(), loadCards()]);
});

// Deleting the account: a confirm step first; checkout answers 409 while an order is still being paid.
$("delete-account").addEventListener("click", () => {
  $("delete-account-confirm").hidden = false;
  $("delete-account-no").focus();
});

$("delete-account-no").addEventListener("click", () => {
  $("delete-account-confirm").hidden = true;
  $("delete-account").focus();
});

$("delete-account-yes").addEventListener("click", async () => {
  const box = $("account-notice");
  notice(box, "");
  try {
    await api("/checkout/buyers/me", { method: "DELETE" });
  } catch (error) {
    if (error.status !== 401) {
      notice(box, error.message);
      return;
    }
  }
  state.buyer = null;
  $("link-code-panel").hidden = true;
  notice(box, "Your account is deleted. Orders this browser placed itself stay listed here until you clear it.", "ok");
  showAccount();
  await Promise.all([render(), loadCards()]);
});

$("orders-more").addEventListener("click", async () => {
  try {
    await loadAccountPage(new Map(myOrders().map((r) => [r.id, r])));
  } catch (error) {
    notice($("orders-notice"), error.message);
  }
});

(async () => {
  await loadBuyer();
  await Promise.all([render(), loadCards()]);
})();
