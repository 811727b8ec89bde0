"""checkout: orders, Stripe payments, refunds."""
