// Paying with a card through Stripe.js: the real one (js.stripe.com) or localstripe's stand-in, as /config.json says.
// Card numbers stay between the browser and Stripe: our APIs only ever see a PaymentMethod id (pm_...).

/** A payment problem to show the buyer as it is. */
export class PaymentError extends Error {}

// Stripe's own test PaymentMethod ids for its test card numbers (real Stripe accepts them in test mode too).
// localstripe's Stripe.js stand-in cannot create PaymentMethods (its createPaymentMethod does nothing, and its
// server takes a publishable key on a few routes only), so in stand-in mode a typed test card maps to its id.
const STAND_IN_TEST_CARDS = {
  "4242424242424242": "pm_card_visa",
  "4000000000000002": "pm_card_visa_chargeDeclined",
  "4000000000000341": "pm_card_chargeCustomerFail",
};

let loading = null;

/** Stripe.js loaded and ready (once per page). */
export function loadPayments() {
  if (!loading) {
    loading = init().catch((error) => {
      loading = null; // a later tap tries again
      throw error;
    });
  }
  return loading;
}

async function init() {
  let config;
  try {
    config = (await (await fetch("/config.json")).json()).stripe;
  } catch {
    throw new PaymentError("Payments could not load. Check your connection and try again.");
  }
  await loadScript(config.js_url);
  if (typeof window.Stripe !== "function") {
    throw new PaymentError("Payments could not load. Try again in a moment.");
  }
  return new Payments(window.Stripe(config.publishable_key), config);
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve();
    script.onerror = () => reject(new PaymentError("Payments could not load. Check your connection and try again."));
    document.head.append(script);
  });
}

class Payments {
  constructor(stripe, config) {
    this.stripe = stripe;
    this.config = config;
    this.standIn = config.mode === "stand-in";
    this.card = null;
  }

  /** Put Stripe's card field into ``container`` (once). */
  mountCard(container) {
    if (this.card) return;
    this.card = this.stripe.elements().create("card", { hidePostalCode: true });
    this.card.mount(container);
    if (this.standIn) dressStandIn(container);
  }

  /** Turn what was typed in the card field into a PaymentMethod id. */
  async createPaymentMethod(billing) {
    if (!this.standIn) {
      const { paymentMethod, error } = await this.stripe.createPaymentMethod({
        type: "card",
        card: this.card,
        billing_details: billing,
      });
      if (error) throw new PaymentError(error.message || "Your card could not be used.");
      return paymentMethod.id;
    }
    return standInPaymentMethod(this.card);
  }

  /** 3-D Secure: let the bank ask the buyer, with the order's client secret. */
  async authenticate(clientSecret) {
    let result;
    if (!this.standIn && typeof this.stripe.handleNextAction === "function") {
      // Our server confirmed the PaymentIntent; Stripe.js only has the buyer's next action left to do.
      result = await this.stripe.handleNextAction({ clientSecret });
    } else {
      // The stand-in opens its own "Complete / Fail authentication" box here.
      result = await this.stripe.confirmCardPayment(clientSecret);
    }
    if (result && result.error) {
      throw new PaymentError(result.error.message || "Your bank did not confirm the payment.");
    }
    return result ? result.paymentIntent : null;
  }
}

// The stand-in's field is five bare inputs named by their field: label them as a card form is.
const STAND_IN_FIELDS = {
  number: ["Card number", "1234 1234 1234 1234", "cc-number", "card-number"],
  exp_month: ["Expiry month", "MM", "cc-exp-month", "card-short"],
  exp_year: ["Expiry year", "YY", "cc-exp-year", "card-short"],
  cvc: ["Security code", "CVC", "cc-csc", "card-short"],
  postal_code: ["Postal code", "ZIP", "postal-code", "card-postal"],
};

function dressStandIn(container) {
  container.classList.add("stand-in");
  const label = container.querySelector("span");
  if (label) label.textContent = "Test mode: local Stripe stand-in";
  for (const input of container.querySelectorAll("input")) {
    const field = STAND_IN_FIELDS[input.getAttribute("placeholder")];
    if (!field) continue;
    const [name, placeholder, autocomplete, kind] = field;
    input.setAttribute("aria-label", name);
    input.setAttribute("placeholder", placeholder);
    input.setAttribute("autocomplete", autocomplete);
    input.setAttribute("inputmode", "numeric");
    input.classList.add(kind);
  }
}

function standInPaymentMethod(card) {
  const typed = card && card.value && card.value.card;
  const number = ((typed && typed.number) || "").replace(/[\s-]/g, "");
  if (!number) throw new PaymentError("Enter your card number.");
  if (!/^\d{16}$/.test(number)) throw new PaymentError("Your card number is incomplete.");
  const month = Number(typed.exp_month);
  if (!(month >= 1 && month <= 12) || !/^20\d\d$/.test(String(typed.exp_year))) {
    throw new PaymentError("Your card's expiry date is incomplete (month, then two digits of the year).");
  }
  const expires = new Date(Number(typed.exp_year), month, 1);
  if (expires <= new Date()) throw new PaymentError("Your card has expired.");
  if (!/^\d{3}$/.test(typed.cvc || "")) throw new PaymentError("Your card's security code is incomplete.");
  const id = STAND_IN_TEST_CARDS[number];
  if (!id) {
    throw new PaymentError(
      "The local Stripe stand-in knows these test cards: 4242 4242 4242 4242 (pays) and 4000 0000 0000 0002 (declined).",
    );
  }
  return id;
}
