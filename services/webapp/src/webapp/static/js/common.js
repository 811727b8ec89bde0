// Shared by every page: the API client (through the web app's /api/ gateway), money, storage, DOM helpers.

/** An API answer that is not a success, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, body, retryAfterS = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
    /** Seconds the answer's Retry-After asks to wait before sending again (429, 503), or null. */
    this.retryAfterS = retryAfterS;
  }
  get isNetwork() {
    return this.status === 0 || this.status === 502 || this.status === 504;
  }
}

/** Call /api/<service>/<path>; resolves to the JSON body (null for 204), rejects with ApiError. */
export async function api(path, { method = "GET", body, token, headers = {}, base = "/api" } = {}) {
  // The web app's own pages say so: writes made with the buyer's cookie need it (CSRF, see buyer_session.py).
  const sent = { "X-Requested-With": "tweetshop", ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (token) sent.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(`${base}${path}`, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network_error", "Can't reach tweetshop. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = (data && data.error) || `http_${response.status}`;
    let message = (data && data.message) || `Something went wrong (${response.status}). Try again.`;
    if (response.status === 502 || response.status === 504) {
      message = "tweetshop is having trouble right now. Try again in a moment.";
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10); // seconds; a date is not sent
    throw new ApiError(response.status, code, message, data, Number.isNaN(retryAfter) ? null : retryAfter);
  }
  return data;
}

// --- money: integers in minor units plus an ISO currency, as every API speaks them --------------------

const digitsCache = new Map();

/** Decimal places of a currency (2 for EUR, 0 for JPY). */
export function fractionDigits(currency) {
  if (!digitsCache.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    } catch {
      digits = 2;
    }
    digitsCache.set(currency, digits);
  }
  return digitsCache.get(currency);
}

/** "€25.00" for (2500, "EUR"). */
export function money(minor, currency) {
  const digits = fractionDigits(currency);
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(minor / 10 ** digits);
  } catch {
    return `${(minor / 10 ** digits).toFixed(digits)} ${currency}`;
  }
}

/** "12.5" or "12,50" → 1250 minor units of a 2-digit currency; null when it is not an amount. */
export function toMinor(text, currency) {
  const cleaned = String(text).trim().replace(",", ".");
  const digits = fractionDigits(currency);
  const match = cleaned.match(digits > 0 ? new RegExp(`^(\\d{1,9})(?:\\.(\\d{1,${digits}}))?$`) : /^(\d{1,12})$/);
  if (!match) return null;
  const whole = Number(match[1]);
  const fraction = Number((match[2] || "").padEnd(digits, "0") || "0");
  return whole * 10 ** digits + fraction;
}

/** The amount as a merchant types it: "25.00". */
export function fromMinor(minor, currency) {
  const digits = fractionDigits(currency);
  return (minor / 10 ** digits).toFixed(digits);
}

// --- this browser's memory (localStorage): buyer id, email, the address of a buyer without an account (a
// signed-in buyer's are checkout's), orders, merchant ---------------------------------------------------

const PREFIX = "tweetshop.";

export const store = {
  get(name, fallback = null) {
    try {
      const raw = localStorage.getItem(PREFIX + name);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(name, value) {
    localStorage.setItem(PREFIX + name, JSON.stringify(value));
  },
  remove(name) {
    localStorage.removeItem(PREFIX + name);
  },
};

/** A random UUID (the Idempotency-Key of a purchase, the buyer id). */
export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** This browser's buyer id: made once, then the same for follows and orders. */
export function buyerId() {
  let id = store.get("buyer_id");
  if (!id) {
    id = `b_${uuid()}`;
    store.set("buyer_id", id);
  }
  return id;
}

/** The orders this browser placed, newest first: [{id, access_token, title, ...}]. */
export function myOrders() {
  const orders = store.get("orders", []);
  return Array.isArray(orders) ? orders : [];
}

/** Remember an order and the token that reads it (only this browser has it). */
export function rememberOrder(order) {
  const others = myOrders().filter((o) => o.id !== order.id);
  store.set("orders", [order, ...others].slice(0, 200));
}

export function orderRecord(id) {
  return myOrders().find((o) => o.id === id) || null;
}

// --- the buyer's account: its credential lives in an HttpOnly cookie, never seen here ---------------------

/** This browser's buyer ({id, created_at, devices}): the cookie's, or a new one. Rejects with ApiError. */
export async function ensureBuyer() {
  const session = await api("/account/session", { method: "POST", base: "" });
  return session.buyer;
}

/** Sign this browser in to the buyer whose other device shows ``code``. */
export async function linkWithCode(code) {
  const session = await api("/account/link", { method: "POST", base: "", body: { code } });
  return session.buyer;
}

/** Revoke every device of this browser's buyer, this one too. */
export async function signOutEverywhere() {
  return api("/account/sign-out-everywhere", { method: "POST", base: "" });
}

// --- DOM ---------------------------------------------------------------------------------------------

// Attributes whose value is a URL: only http(s) or same-site ones are set (never javascript: or data:).
const URL_ATTRIBUTES = new Set(["href", "src", "action", "formaction"]);

/** ``value`` when it is an http(s) or relative URL, else null. */
export function safeUrl(value) {
  try {
    const url = new URL(String(value), location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? String(value) : null;
  } catch {
    return null;
  }
}

/**
 * el("p", {class: "x", text: "hi", onclick: f}, child, ...): the one way the pages build DOM from data.
 * Text is always set as text (textContent, text nodes), never parsed as HTML; handlers are functions
 * (addEventListener), never attribute strings; URL attributes take http(s) URLs only.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`el: ${key} must be a function`);
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") Object.assign(node.dataset, value);
    else if (URL_ATTRIBUTES.has(key)) {
      const url = safeUrl(value);
      if (url !== null) node.setAttribute(key, url);
    } else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Show a message in a notice box: kind is "error", "info" or "ok"; empty text hides it. */
// A saved card as a person reads it: brand and last four only (the number never reaches tweetshop).
export function cardLabel(card) {
  const brand = card.brand ? card.brand.charAt(0).toUpperCase() + card.brand.slice(1) : "Card";
  return `${brand} ···· ${card.last4}`;
}

export function notice(box, text, kind = "error") {
  box.textContent = text || "";
  box.className = `notice ${kind}`;
  box.hidden = !text;
}

/** "3m", "2h", "5d" since an ISO time. */
export function timeAgo(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return "now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return new Date(iso).toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** What a product card says about stock: [label, css class]. */
export function stockLabel(product) {
  if (product.status !== "active") return ["No longer on sale", "out"];
  if (product.stock_available <= 0) return ["Sold out", "out"];
  if (product.stock_available <= 5) return [`In stock · only ${product.stock_available} left`, "low"];
  return ["In stock", "in"];
}
