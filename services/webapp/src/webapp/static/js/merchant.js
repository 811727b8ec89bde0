// The merchant's side: open a shop (API key shown once), list products, change price or stock, delist, tweet.

import { api, el, fromMinor, money, notice, sleep, store, toMinor } from "./common.js";

const $ = (id) => document.getElementById(id);
const banner = $("merchant-notice");
// feed learns of a new shop or product from catalog's events a moment after catalog answers; until then it asks
// to be asked again (503 with Retry-After). The page does so, publishing meanwhile, for this long at most.
const PUBLISH_PATIENCE_MS = 15000;

/** `send()`, sent again after each Retry-After a 503 asks for while PUBLISH_PATIENCE_MS lasts; else its error. */
async function sendPatiently(send) {
  const deadline = Date.now() + PUBLISH_PATIENCE_MS;
  for (;;) {
    try {
      return await send();
    } catch (error) {
      const waitMs = error.status === 503 && error.retryAfterS !== null ? Math.max(1, error.retryAfterS) * 1000 : null;
      if (waitMs === null || Date.now() + waitMs > deadline) throw error;
      await sleep(waitMs);
    }
  }
}

function merchant() {
  return store.get("merchant", null);
}

function show(view) {
  for (const id of ["signed-out", "key-once", "signed-in"]) $(id).hidden = id !== view;
}

// --- signing up and in -------------------------------------------------------------------------------

$("register").addEventListener("submit", async (event) => {
  event.preventDefault();
  const handle = $("reg-handle").value.trim().replace(/^@/, "").toLowerCase();
  const name = $("reg-name").value.trim();
  if (!/^[a-z0-9_]{2,30}$/.test(handle)) {
    notice(banner, "Handle: 2 to 30 lower-case letters, digits or _.");
    return;
  }
  if (!name) {
    notice(banner, "Give your shop a name.");
    return;
  }
  try {
    const created = await api("/catalog/merchants", { method: "POST", body: { handle, name } });
    store.set("merchant", { id: created.id, handle: created.handle, name: created.name, api_key: created.api_key });
    notice(banner, "");
    $("key-value").textContent = created.api_key;
    show("key-once");
  } catch (error) {
    notice(banner, error.code === "handle_taken" ? `@${handle} is taken: choose another handle.` : error.message);
  }
});

$("key-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("key-value").textContent);
    notice(banner, "Copied.", "ok");
  } catch {
    notice(banner, "Select the key and copy it by hand.", "info");
  }
});

$("key-done").addEventListener("click", () => {
  $("key-value").textContent = ""; // shown once: gone from the page from now on
  notice(banner, "");
  openShop();
});

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  try {
    const me = await api("/catalog/merchants/me", { token: key });
    store.set("merchant", { ...me, api_key: key });
    $("key-input").value = "";
    notice(banner, "");
    openShop();
  } catch (error) {
    notice(banner, error.status === 401 ? "That key is not valid (it may have been replaced)." : error.message);
  }
});

$("sign-out").addEventListener("click", () => {
  store.remove("merchant");
  $("products").replaceChildren();
  show("signed-out");
});

// --- products ----------------------------------------------------------------------------------------

$("add-product").addEventListener("submit", async (event) => {
  event.preventDefault();
  const m = merchant();
  const currency = $("p-currency").value;
  const price = toMinor($("p-price").value, currency);
  const stock = Number($("p-stock").value);
  const image = $("p-image").value.trim();
  if (!$("p-title").value.trim()) return notice(banner, "Give the product a title.");
  if (!price || price <= 0) return notice(banner, `Price: an amount such as ${fromMinor(2500, currency)}.`);
  if (!Number.isInteger(stock) || stock < 0) return notice(banner, "Units in stock: a whole number, 0 or more.");
  if (image && !/^https?:\/\//.test(image)) return notice(banner, "Picture URL: an http(s) address.");
  try {
    const product = await api("/catalog/products", {
      method: "POST",
      token: m.api_key,
      body: {
        merchant_id: m.id,
        title: $("p-title").value.trim(),
        description: $("p-description").value.trim(),
        image_url: image || null,
        price_minor: price,
        currency,
        stock,
      },
    });
    $("add-product").reset();
    notice(banner, `${product.title} is on sale. Tweet it to reach your followers.`, "ok");
    $("products").prepend(productRow(product));
    $("products-empty").hidden = true;
  } catch (error) {
    notice(banner, error.message);
  }
});

function productRow(product) {
  let p = product;
  const msg = el("p", { class: "notice", hidden: true });
  const price = el("input", { inputmode: "decimal", "aria-label": "Price", class: "price-input" });
  const stock = el("input", { type: "number", min: "0", "aria-label": "Units in stock", class: "stock-input" });
  const status = el("span", { class: "badge" });
  const counts = el("span", { class: "muted small" });
  const shown = el("span", { class: "price" });
  const delist = el("button", { class: "secondary" });
  const text = el("textarea", { rows: "3", maxlength: "280", "aria-label": "Tweet text" });
  const post = el("button", { class: "primary", text: "Post tweet", onclick: () => tweet() });
  const composer = el("div", { class: "composer", hidden: true }, text, post);

  function render() {
    price.value = fromMinor(p.price_minor, p.currency);
    stock.value = String(p.stock_available);
    shown.textContent = money(p.price_minor, p.currency);
    const onSale = p.status === "active";
    status.textContent = !onSale ? "Delisted" : p.stock_available > 0 ? "On sale" : "Sold out";
    status.className = `badge ${!onSale || p.stock_available === 0 ? "failed" : "paid"}`;
    counts.textContent = `${p.stock_available} in stock · ${p.stock_reserved} reserved · ${p.stock_sold} sold`;
    delist.textContent = onSale ? "Delist" : "Put back on sale";
  }

  async function patch(changes, done) {
    try {
      p = await api(`/catalog/products/${p.id}`, { method: "PATCH", token: merchant().api_key, body: changes });
      render();
      notice(msg, done, "ok");
    } catch (error) {
      render();
      notice(msg, error.message);
    }
  }

  async function save() {
    const changes = {};
    const newPrice = toMinor(price.value, p.currency);
    if (!newPrice || newPrice <= 0) return notice(msg, `Price: an amount such as ${fromMinor(2500, p.currency)}.`);
    const newStock = Number(stock.value);
    if (!Number.isInteger(newStock) || newStock < 0) return notice(msg, "Stock: a whole number, 0 or more.");
    if (newPrice !== p.price_minor) changes.price_minor = newPrice;
    if (newStock !== p.stock_available) changes.stock = newStock;
    if (!Object.keys(changes).length) return notice(msg, "Nothing changed.", "info");
    await patch(changes, "Saved: the timeline shows it in a moment.");
  }

  async function tweet() {
    const m = merchant();
    const body = { merchant_id: m.id, text: text.value.trim(), product_id: p.id };
    if (!body.text) return notice(msg, "Write something about it.");
    post.disabled = true;
    post.textContent = "Publishing…";
    notice(msg, "");
    try {
      // A shop or product created moments ago: feed answers "retry after 1 s" until it has read it (never an error).
      await sendPatiently(() => api("/feed/tweets", { method: "POST", token: m.api_key, body }));
      composer.hidden = true;
      notice(msg, "Posted! ", "ok");
      msg.append(el("a", { href: "/", text: "See it on the timeline" }));
    } catch (error) {
      const late = error.status === 503 && error.retryAfterS !== null;
      notice(msg, late ? "Publishing is taking longer than usual: post it again in a minute." : error.message);
    } finally {
      post.disabled = false;
      post.textContent = "Post tweet";
    }
  }

  delist.addEventListener("click", () =>
    p.status === "active"
      ? patch({ status: "delisted" }, "Delisted: its tweets show it as no longer on sale.")
      : patch({ status: "active" }, "Back on sale."),
  );
  render();
  return el(
    "article",
    { class: "product-row", dataset: { productId: p.id } },
    el(
      "div",
      { class: "row" },
      p.image_url ? el("img", { src: p.image_url, alt: "", class: "thumb", loading: "lazy" }) : el("div", { class: "thumb" }),
      el("div", { class: "grow" }, el("strong", { text: p.title }), el("div", {}, shown, " ", status), counts),
    ),
    el(
      "div",
      { class: "edit" },
      el("label", {}, "Price", price),
      el("label", {}, "Stock", stock),
      el("button", { class: "primary", text: "Save", onclick: () => save() }),
    ),
    el(
      "div",
      { class: "actions" },
      el("button", {
        class: "secondary",
        text: "Tweet it",
        onclick: () => {
          composer.hidden = !composer.hidden;
          if (!text.value) text.value = `New: ${p.title}, ${money(p.price_minor, p.currency)}. Tap Buy!`;
        },
      }),
      delist,
    ),
    composer,
    msg,
  );
}

async function openShop() {
  const m = merchant();
  show("signed-in");
  $("shop-name").textContent = m.name;
  $("shop-handle").textContent = `@${m.handle}`;
  $("shop-avatar").textContent = m.name.charAt(0).toUpperCase();
  try {
    const products = await api(`/catalog/products?${new URLSearchParams({ merchant_id: m.id })}`);
    $("products").replaceChildren(...products.map(productRow));
    $("products-empty").hidden = products.length > 0;
  } catch (error) {
    notice(banner, error.message);
  }
}

if (merchant()) openShop();
else show("signed-out");
