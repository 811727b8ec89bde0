# localstripe: a stateful stand-in for the Stripe API (PaymentIntents, signed
# webhooks, a Stripe.js stand-in at /js.stripe.com/v3/) for when no Stripe key
# is given. Build from the repository root:
#   docker build -f deploy/localstripe.Dockerfile -t tweetshop/localstripe .
# The same image registers checkout's webhook (register_webhook.py), so the
# one-shot `localstripe-webhook` service in docker-compose.yml pulls nothing.

FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Same pin as constraints.txt (a test checks they agree).
RUN pip install --no-cache-dir localstripe==1.15.10
RUN groupadd --system --gid 10001 localstripe \
 && useradd --system --uid 10001 --gid localstripe --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin localstripe
COPY deploy/localstripe/register_webhook.py /opt/localstripe/register_webhook.py
WORKDIR /opt/localstripe
USER 10001:10001
EXPOSE 8420
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8420/js.stripe.com/v3/', timeout=3)"]
# --from-scratch: start empty instead of loading the pickle a previous run left in /tmp.
CMD ["localstripe", "--from-scratch"]
