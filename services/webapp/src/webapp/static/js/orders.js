// My orders: the ones this browser placed (ids and tokens in localStorage), each with its live status.

import { api, el, money, myOrders, notice } from "./common.js";

const STATUS = {
  pending: ["Paying…", "pending"],
  requires_action: ["Confirm with your bank", "action"],
  paid: ["Paid", "paid"],
  failed: ["Declined", "failed"],
  cancelled: ["Cancelled", "failed"],
  refunded: ["Refunded", "refunded"],
};

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

async function fill(record, view) {
  try {
    const order = await api(`/checkout/orders/${encodeURIComponent(record.id)}`, { token: record.access_token });
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
  } catch (error) {
    view.status.textContent = error.isNetwork ? "Offline" : "Unavailable";
    view.status.className = "badge failed";
    view.refund.textContent = error.isNetwork ? "Can't reach tweetshop right now." : error.message;
  }
}

const records = myOrders();
const list = document.getElementById("orders");
document.getElementById("orders-empty").hidden = records.length > 0;
const views = records.map((record) => [record, card(record)]);
list.replaceChildren(...views.map(([, view]) => view.node));
// A few at a time: a long history must not fire hundreds of requests at once.
(async () => {
  for (let i = 0; i < views.length; i += 6) {
    await Promise.all(views.slice(i, i + 6).map(([record, view]) => fill(record, view)));
  }
  if (views.some(([, view]) => view.status.textContent === "Offline")) {
    notice(document.getElementById("orders-notice"), "Some orders could not be refreshed: check your connection.");
  }
})();
