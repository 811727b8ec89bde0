// The product sheet: quantity, a saved address, a card through Stripe.js, Pay → the order page.
// A returning buyer with a saved card (kept by Stripe on the buyer's account) and a saved address (kept by
// checkout on the buyer's account; in this browser only while the buyer has no account yet) sees one tap:
// the product, the price, the card (brand and last four) and the address, and Pay; quantity, another card or
// another address are one tap away. The same sheet serves every page that shows a buyable tweet.

import { api, buyerId, cardLabel, el, ensureBuyer, money, notice, rememberOrder, safeUrl, stockLabel, store, uuid } from "./common.js";
import { PaymentError, loadPayments } from "./stripe-pay.js";

const MAX_QUANTITY = 100; // checkout's limit per order

// Where parcels can be mapped without a geocoder: a city from this list, or the buyer's own location.
const CITIES = {
  Amsterdam: ["NL", 52.3676, 4.9041],
  Berlin: ["DE", 52.52, 13.405],
  Brussels: ["BE", 50.8503, 4.3517],
  Lisbon: ["PT", 38.7223, -9.1393],
  London: ["GB", 51.5074, -0.1278],
  Lyon: ["FR", 45.764, 4.8357],
  Madrid: ["ES", 40.4168, -3.7038],
  Marseille: ["FR", 43.2965, 5.3698],
  "New York": ["US", 40.7128, -74.006],
  Paris: ["FR", 48.8566, 2.3522],
  Rome: ["IT", 41.9028, 12.4964],
  "San Francisco": ["US", 37.7749, -122.4194],
  Tokyo: ["JP", 35.6762, 139.6503],
  Toronto: ["CA", 43.6532, -79.3832],
};

const $ = (id) => document.getElementById(id);
const sheet = $("sheet");
const box = $("sheet-notice");
const payButton = $("pay");
const fields = ["name", "email", "line1", "city", "country"];

const state = {
  tweet: null,
  quantity: 1,
  attempt: null,
  located: null,
  paying: false,
  cards: [], // the buyer's saved cards, as checkout lists them ({id, brand, last4, exp_month, exp_year})
  card: null, // the saved card to pay with (its pm_ id), or null: a new card typed in Stripe's field
  addresses: null, // the buyer's saved addresses, default first, as checkout lists them; null: no account yet
  address: null, // the saved address to ship to (its id), or null: the form (a new address)
  opener: null, // what had the focus before the sheet opened: it gets it back when the sheet closes
};

// --- the address: the buyer's own, saved by checkout; in this browser only for a buyer without an account ----
// The email is not part of a saved address (checkout keeps none on the account): this browser remembers it.

const PLACE = ["name", "line1", "city", "country", "lat", "lon"];

function localAddress() {
  return store.get("address", null);
}

function rememberedEmail() {
  return store.get("email", null) || (localAddress() || {}).email || "";
}

function hasSaved() {
  return Array.isArray(state.addresses) && state.addresses.length > 0;
}

/** The address the summary shows: the chosen saved one (with the remembered email), or this browser's. */
function currentAddress() {
  if (!hasSaved()) return localAddress();
  const saved = state.addresses.find((a) => a.id === state.address);
  if (!saved) return null;
  const a = { email: rememberedEmail() };
  for (const f of PLACE) a[f] = saved[f];
  return a;
}

function addressLabel(a) {
  return `${a.name}, ${a.line1}, ${a.city} ${a.country}`;
}

function addressComplete(a) {
  return a && fields.every((f) => a[f]) && Number.isFinite(a.lat) && Number.isFinite(a.lon);
}

function fillForm(a) {
  for (const f of fields) $(`ship-${f}`).value = (a && a[f]) || "";
  state.located = a && Number.isFinite(a.lat) ? { lat: a.lat, lon: a.lon, city: a.city } : null;
}

function showAddress(editing) {
  const a = currentAddress();
  const summary = !editing && addressComplete(a);
  $("address-summary").hidden = !summary && !hasSaved();
  $("address-form").hidden = summary;
  $("address-text").textContent = a && (summary || hasSaved()) ? addressLabel(a) : "A new address";
  if (!summary) fillForm(a || (hasSaved() ? { email: rememberedEmail() } : localAddress()));
}

/** The signed-in buyer's saved addresses (the default first); none when the browser has no account yet. */
async function loadAddresses() {
  try {
    const found = await api("/checkout/buyers/me/addresses");
    state.addresses = Array.isArray(found.addresses) ? found.addresses : [];
  } catch {
    state.addresses = null; // not signed in yet, or not listed right now: this browser's memory
  }
  if (!hasSaved()) state.address = null;
  else if (!state.addresses.some((a) => a.id === state.address)) state.address = state.addresses[0].id;
}

function chooseAddress(id) {
  state.address = id;
  state.attempt = null;
  $("address-choices").hidden = true;
  $("address-change").setAttribute("aria-expanded", "false");
  showAddress(id === null);
  if (id === null) $("ship-name").focus();
  else {
    $("address-change").focus();
    // The one chosen is filled in next time too (on every device): best effort, the purchase does not wait.
    api(`/checkout/buyers/me/addresses/${encodeURIComponent(id)}/default`, { method: "PUT" }).catch(() => null);
  }
}

function showAddressChoices() {
  const choices = $("address-choices");
  const legend = choices.querySelector("legend");
  const option = (id, text) => {
    const input = el("input", { type: "radio", name: "ship-to", value: id || "new", onchange: () => chooseAddress(id) });
    input.checked = id === state.address;
    return el("label", {}, input, el("span", { text }));
  };
  choices.replaceChildren(
    legend,
    ...state.addresses.map((a) => option(a.id, addressLabel(a))),
    option(null, "A new address"),
  );
  choices.hidden = false;
  $("address-change").setAttribute("aria-expanded", "true");
  choices.querySelector("input:checked")?.focus();
}

/** The address as checkout wants it (typed: from the form), or a message saying what is missing. */
function readAddress() {
  const current = currentAddress();
  if (!$("address-form").hidden || !addressComplete(current)) {
    const a = {};
    for (const f of fields) a[f] = $(`ship-${f}`).value.trim();
    const missing = fields.filter((f) => !a[f]);
    if (missing.length) return { problem: `Please fill in your ${missing.join(", ").replace("line1", "street")}.` };
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(a.email)) return { problem: "Please check your email address." };
    if (!/^[A-Za-z]{2}$/.test(a.country)) return { problem: "Country: use its two-letter code, such as FR or US." };
    a.country = a.country.toUpperCase();
    const known = Object.entries(CITIES).find(([name]) => name.toLowerCase() === a.city.toLowerCase());
    if (state.located && (!state.located.city || state.located.city === a.city)) {
      a.lat = state.located.lat;
      a.lon = state.located.lon;
    } else if (known) {
      a.lat = known[1][1];
      a.lon = known[1][2];
    } else {
      return { problem: "We can't place that city on the delivery map: pick one from the list or use your location." };
    }
    store.set("email", a.email);
    // Kept here until the buyer's account has it (then only there): a buyer without an account still has it.
    store.set("address", a);
    return { address: a, typed: true };
  }
  return { address: current, typed: false };
}

/** A typed address becomes the buyer's default saved address (the same one again is not saved twice). */
async function saveToAccount(a) {
  const found = await api("/checkout/buyers/me/addresses");
  const same = (found.addresses || []).find((s) => PLACE.every((f) => s[f] === a[f]));
  if (same && !same.is_default) {
    await api(`/checkout/buyers/me/addresses/${encodeURIComponent(same.id)}/default`, { method: "PUT" });
  } else if (!same) {
    const body = { default: true };
    for (const f of PLACE) body[f] = a[f];
    await api("/checkout/buyers/me/addresses", { method: "POST", body });
  }
  store.remove("address");
}

function setUpAddressForm() {
  $("cities").replaceChildren(...Object.keys(CITIES).map((name) => el("option", { value: name })));
  $("ship-city").addEventListener("change", () => {
    const known = CITIES[$("ship-city").value.trim()];
    if (known && !$("ship-country").value) $("ship-country").value = known[0];
  });
  // Saved addresses to choose from (a signed-in buyer's), made here: every page's sheet has the same markup.
  const legend = el("legend", { text: "Ship to" });
  const choices = el("fieldset", { id: "address-choices", class: "choices", hidden: true }, legend);
  $("address-summary").after(choices);
  $("address-change").setAttribute("aria-controls", "address-choices");
  $("address-change").addEventListener("click", () => {
    if (!hasSaved()) showAddress(true);
    else if ($("address-choices").hidden) showAddressChoices();
    else chooseAddress(state.address);
  });
  $("use-location").addEventListener("click", () => {
    if (!navigator.geolocation) {
      notice(box, "This browser cannot tell where you are: pick a city from the list.");
      return;
    }
    navigator.geolocation.getCurrentPosition(
      (position) => {
        state.located = { lat: position.coords.latitude, lon: position.coords.longitude, city: null };
        notice(box, "Got your location: the courier map will use it.", "ok");
      },
      () => notice(box, "Your location is not available: pick a city from the list."),
      { timeout: 10000 },
    );
  });
}

// --- saved cards: listed by checkout (from Stripe), chosen here; never a card number ------------------------

async function loadCards() {
  try {
    const found = await api("/checkout/buyers/me/cards");
    state.cards = Array.isArray(found.cards) ? found.cards : [];
  } catch {
    state.cards = []; // not signed in yet, or cards cannot be listed right now: a new card still pays
  }
  if (!state.cards.some((c) => c.id === state.card)) state.card = state.cards.length ? state.cards[0].id : null;
}

function chooseCard(id) {
  state.card = id;
  state.attempt = null;
  $("card-choices").hidden = true;
  $("card-change").setAttribute("aria-expanded", "false");
  showCard();
  if (id === null) {
    mountCardField();
    $("new-card").querySelector("input, iframe")?.focus();
  } else $("card-change").focus();
}

function showCardChoices() {
  const choices = $("card-choices");
  const legend = choices.querySelector("legend");
  const option = (id, text) => {
    const input = el("input", { type: "radio", name: "pay-with", value: id || "new", onchange: () => chooseCard(id) });
    input.checked = id === state.card;
    return el("label", {}, input, el("span", { text }));
  };
  choices.replaceChildren(
    legend,
    ...state.cards.map((c) => option(c.id, `${cardLabel(c)} · expires ${String(c.exp_month).padStart(2, "0")}/${c.exp_year}`)),
    option(null, "A new card"),
  );
  choices.hidden = false;
  $("card-change").setAttribute("aria-expanded", "true");
  choices.querySelector("input:checked")?.focus();
}

function showCard() {
  const saved = state.cards.find((c) => c.id === state.card);
  $("saved-card").hidden = !saved && !state.cards.length;
  $("saved-card-text").textContent = saved ? cardLabel(saved) : "A new card";
  $("new-card").hidden = Boolean(saved);
}

async function mountCardField() {
  try {
    const payments = await loadPayments();
    payments.mountCard($("card-element"));
    $("card-hint").hidden = !payments.standIn;
  } catch (error) {
    notice(box, error.message);
  }
}

// --- keyboard: the sheet is a modal dialog (focus stays inside; Escape closes; focus goes back) ----------

function focusables() {
  const panel = sheet.querySelector(".sheet-panel");
  return [...panel.querySelectorAll("button, a[href], input, select, textarea, iframe, [tabindex]")].filter(
    (node) => !node.disabled && node.tabIndex >= 0 && node.getClientRects().length > 0,
  );
}

function trapFocus(event) {
  if (event.key !== "Tab" || sheet.hidden) return;
  const nodes = focusables();
  if (!nodes.length) return;
  const first = nodes[0];
  const last = nodes[nodes.length - 1];
  const inside = sheet.querySelector(".sheet-panel").contains(document.activeElement);
  if (event.shiftKey && (document.activeElement === first || !inside)) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && (document.activeElement === last || !inside)) {
    event.preventDefault();
    first.focus();
  }
}

// --- the sheet ----------------------------------------------------------------------------------------

function render() {
  const { tweet } = state;
  const p = tweet.product;
  $("sheet-title").textContent = p.title;
  $("sheet-merchant").textContent = tweet.merchant ? `${tweet.merchant.name} · @${tweet.merchant.handle}` : "";
  $("sheet-price").textContent = money(p.price_minor, p.currency);
  const [label, kind] = stockLabel(p);
  $("sheet-stock").textContent = label;
  $("sheet-stock").className = `stock ${kind}`;
  const image = $("sheet-image");
  image.hidden = !p.image_url;
  if (p.image_url && safeUrl(p.image_url)) image.src = p.image_url;
  const most = Math.max(1, Math.min(MAX_QUANTITY, p.stock_available));
  state.quantity = Math.min(Math.max(1, state.quantity), most);
  $("qty").textContent = String(state.quantity);
  $("qty-minus").disabled = state.quantity <= 1;
  $("qty-plus").disabled = state.quantity >= most;
  payButton.disabled = state.paying || !tweet.buyable;
  payButton.textContent = state.paying
    ? "Paying…"
    : tweet.buyable
      ? `Pay ${money(p.price_minor * state.quantity, p.currency)}`
      : label;
}

function close() {
  if (state.paying) return;
  sheet.hidden = true;
  document.body.classList.remove("sheet-open");
  if (state.opener && document.contains(state.opener)) state.opener.focus();
  state.opener = null;
  const url = new URL(location.href);
  if (url.searchParams.has("buy")) {
    url.searchParams.delete("buy");
    history.replaceState(null, "", url);
  }
}

/** Open the sheet for a tweet, with its product's state as feed knows it now. */
export async function openSheet(tweetId) {
  let tweet;
  try {
    tweet = await api(`/feed/tweets/${encodeURIComponent(tweetId)}`);
  } catch (error) {
    const banner = document.getElementById("timeline-notice");
    notice(banner, error.status === 404 || error.status === 422 ? "That tweet does not exist any more." : error.message);
    return;
  }
  if (!tweet.product) return;
  await Promise.all([loadCards(), loadAddresses()]);
  state.tweet = tweet;
  state.quantity = 1;
  state.attempt = null;
  notice(box, tweet.buyable ? "" : "This product can't be bought right now.", "info");
  showAddress(false);
  $("address-choices").hidden = true;
  $("card-choices").hidden = true;
  $("save-card").checked = false;
  showCard();
  render();
  state.opener = state.opener || document.activeElement;
  sheet.hidden = false;
  document.body.classList.add("sheet-open");
  $("sheet-title").focus();
  if (state.card === null) await mountCardField();
}

function explain(error) {
  switch (error.code) {
    case "insufficient_stock":
      return `Sorry, ${error.message}. You were not charged.`;
    case "product_unavailable":
      return "This product is no longer on sale. You were not charged.";
    case "unknown_product":
    case "unknown_tweet":
    case "tweet_product_mismatch":
      return "This product was only just listed: try again in a few seconds.";
    default:
      return error.message;
  }
}

async function pay() {
  if (state.paying || !state.tweet) return;
  const { tweet } = state;
  const { address, typed, problem } = readAddress();
  if (problem) {
    notice(box, problem);
    return;
  }
  state.paying = true;
  notice(box, "");
  render();
  const order = {
    tweet_id: tweet.id,
    product_id: tweet.product.id,
    quantity: state.quantity,
    buyer: { id: buyerId(), email: address.email },
    shipping: {
      name: address.name,
      line1: address.line1,
      city: address.city,
      country: address.country,
      lat: address.lat,
      lon: address.lon,
    },
  };
  // A saved card pays by its id alone (checkout asks Stripe whose it is); a new card may be saved with this purchase.
  const saveCard = state.card === null && $("save-card").checked;
  // One purchase, one Idempotency-Key: tapping Pay again after a network error cannot buy twice.
  const fingerprint = JSON.stringify({ order, card: state.card, saveCard });
  if (!state.attempt || state.attempt.fingerprint !== fingerprint) {
    state.attempt = { key: uuid(), fingerprint, paymentMethod: state.card };
  }
  const attempt = state.attempt;
  try {
    if (!attempt.paymentMethod) {
      const payments = await loadPayments();
      attempt.paymentMethod = await payments.createPaymentMethod({ name: address.name, email: address.email });
    }
    // The order belongs to this browser's buyer account (its cookie, made here the first time); when the
    // account cannot be had right now, the order is placed without one, as before accounts.
    await ensureBuyer().catch(() => null);
    const send = () =>
      api("/checkout/orders", {
        method: "POST",
        headers: { "Idempotency-Key": attempt.key },
        body: { ...order, payment_method: attempt.paymentMethod, ...(saveCard ? { save_card: true } : {}) },
      });
    let placed;
    try {
      placed = await send();
    } catch (error) {
      if (error.status !== 401) throw error;
      // Signed out everywhere meanwhile: the web app dropped the cookie; a new account, the same purchase.
      await ensureBuyer().catch(() => null);
      placed = await send();
    }
    rememberOrder({
      id: placed.id,
      access_token: placed.access_token,
      tweet_id: tweet.id,
      title: tweet.product.title,
      image_url: tweet.product.image_url,
      merchant: tweet.merchant ? tweet.merchant.name : null,
      quantity: state.quantity,
      amount_minor: placed.amount_minor,
      currency: placed.currency,
      placed_at: new Date().toISOString(),
    });
    // A new address is the buyer's from now on (on every device); if the account cannot have it right now,
    // this browser still remembers it.
    if (typed) await saveToAccount(address).catch(() => null);
    state.paying = false;
    location.assign(`/orders/${encodeURIComponent(placed.id)}`);
    return;
  } catch (error) {
    state.paying = false;
    if (error instanceof PaymentError) {
      attempt.paymentMethod = null;
      notice(box, error.message);
    } else if (error.code === "payment_method_not_found") {
      // The saved card was removed meanwhile (on another device): nothing was placed; pick another one.
      state.attempt = null;
      await loadCards();
      showCard();
      if (state.card === null) await mountCardField();
      notice(box, "That card is no longer saved. Choose another card. You were not charged.");
    } else if (error.isNetwork) {
      // Same key on the next tap: if the order was made after all, checkout answers with that same order.
      const why =
        error.status === 0
          ? "Can't reach tweetshop. Check your connection, then tap Pay again"
          : "tweetshop is having trouble right now. Tap Pay again in a moment";
      notice(box, `${why}: you won't be charged twice.`);
    } else {
      state.attempt = null;
      notice(box, explain(error));
      if (error.code === "insufficient_stock" || error.code === "product_unavailable") {
        render();
        await refresh();
      }
    }
  }
  render();
}

async function refresh() {
  try {
    state.tweet = await api(`/feed/tweets/${encodeURIComponent(state.tweet.id)}`);
  } catch {
    // keep what is shown
  }
}

setUpAddressForm();
for (const closer of sheet.querySelectorAll("[data-close]")) closer.addEventListener("click", close);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !sheet.hidden) close();
  else trapFocus(event);
});
$("card-change").addEventListener("click", () => {
  if ($("card-choices").hidden) showCardChoices();
  else chooseCard(state.card);
});
$("qty-minus").addEventListener("click", () => {
  state.quantity -= 1;
  render();
});
$("qty-plus").addEventListener("click", () => {
  state.quantity += 1;
  render();
});
payButton.addEventListener("click", pay);
