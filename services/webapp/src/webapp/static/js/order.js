// One order, live: payment status (3-D Secure when the bank asks), then the way to the tracking map.

import { ApiError, api, el, money, notice, orderRecord, sleep } from "./common.js";
import { loadPayments } from "./stripe-pay.js";

const $ = (id) => document.getElementById(id);
const orderId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
// This browser's memory of the order (title, its access token), or only its id: then the buyer account's cookie
// reads it (an order placed on another device linked to this one).
const record = orderRecord(orderId) || { id: orderId };
const box = $("order-notice");
const state = { authenticating: false, authenticated: new Set(), stopped: false };

const VIEWS = {
  pending: ["pending", "Confirming your payment…", "This takes a few seconds."],
  requires_action: ["action", "Confirm with your bank", "Your bank wants to check that it's you."],
  paid: ["paid", "Paid", ""],
  failed: ["failed", "Payment declined", ""],
  cancelled: ["failed", "Order cancelled", ""],
  refunded: ["refunded", "Refunded", ""],
};

function show(order) {
  const [icon, title, text] = VIEWS[order.status] || ["pending", order.status, ""];
  $("status-icon").className = `status-icon ${icon}`;
  $("status-title").textContent = title;
  const actions = [];
  let detail = text;
  if (order.status === "paid") {
    detail = `Thanks! ${record.merchant || "The shop"} is preparing your parcel.`;
    if (order.tracking_url) {
      actions.push(el("a", { class: "button primary wide", href: order.tracking_url, text: "Track your parcel on the map" }));
    } else {
      actions.push(el("p", { class: "muted small", text: "Your tracking link appears here as soon as the parcel is registered." }));
    }
  } else if (order.status === "failed") {
    detail = `${order.failure_reason || "The payment did not go through."} You were not charged.`;
    actions.push(tryAgain("Try another card", order));
  } else if (order.status === "cancelled") {
    detail = `${order.cancellation_reason || "The order could not be completed."} You were not charged.`;
    actions.push(tryAgain("Back to the tweet", order));
  } else if (order.status === "refunded") {
    detail = `${money(order.refunded_minor, order.currency)} went back to your card.`;
  } else if (order.status === "requires_action") {
    actions.push(el("button", { class: "primary wide", text: "Confirm payment", onclick: () => authenticate(order, true) }));
  }
  $("status-text").textContent = detail;
  $("order-actions").replaceChildren(...actions);

  $("order-details").hidden = false;
  $("item-title").textContent = record.title || "Your order";
  $("item-amount").textContent = money(order.amount_minor, order.currency);
  $("item-quantity").textContent = `${order.quantity} × ${money(order.unit_price_minor, order.currency)}`;
  $("item-refund").textContent =
    order.refunded_minor > 0 && order.status !== "refunded"
      ? `Refunded ${money(order.refunded_minor, order.currency)}`
      : "";
  const s = order.shipping;
  $("ship-to").textContent = `${s.name}, ${s.line1}, ${s.city} ${s.country}`;
  $("order-id").textContent = order.id;
}

function tryAgain(label, order) {
  const tweetId = record.tweet_id || order.tweet_id;
  return el("a", { class: "button primary wide", href: `/?buy=${encodeURIComponent(tweetId)}`, text: label });
}

async function authenticate(order, asked) {
  const secret = order.client_secret;
  if (!secret || state.authenticating || (state.authenticated.has(secret) && !asked)) return;
  state.authenticating = true;
  state.authenticated.add(secret);
  try {
    const payments = await loadPayments();
    await payments.authenticate(secret);
    notice(box, "Thanks, your bank confirmed it. Finishing the payment…", "info");
  } catch (error) {
    notice(box, `${error.message} You were not charged.`);
  } finally {
    state.authenticating = false;
  }
}

function finished(order) {
  return (
    ["failed", "cancelled", "refunded"].includes(order.status) || (order.status === "paid" && order.tracking_url)
  );
}

async function watch() {
  let delay = 1000;
  const started = Date.now();
  while (!state.stopped) {
    try {
      const order = await api(`/checkout/orders/${encodeURIComponent(orderId)}`, { token: record.access_token });
      if (box.classList.contains("network")) notice(box, "");
      // "Finishing the payment…" is over once the order is decided.
      if (order.status !== "requires_action" && order.status !== "pending" && box.classList.contains("info")) {
        notice(box, "");
      }
      show(order);
      if (order.status === "requires_action") authenticate(order, false);
      if (finished(order)) return;
      delay = Date.now() - started < 60000 ? 1000 : 3000;
    } catch (error) {
      if (error instanceof ApiError && !error.isNetwork) {
        $("status-title").textContent = "We can't show this order";
        $("status-icon").className = "status-icon failed";
        const missing = error.status === 404 || error.status === 401;
        if (missing) {
          $("status-title").textContent = "This order is not in this browser";
          $("status-text").textContent = "Link this device to the one that placed it (My orders), or open it there.";
          $("order-actions").replaceChildren(el("a", { class: "button secondary wide", href: "/orders", text: "My orders" }));
        }
        notice(box, missing ? "This order was not found in this browser." : error.message);
        return;
      }
      notice(box, `${error.message} Retrying…`, "error network");
      delay = Math.min(delay * 2, 15000);
    }
    await sleep(delay);
  }
}

watch();
