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
# Only from the hashed lock files (lock/README.md): the installer and build backend, then localstripe (an sdist,
# built with that setuptools) and what it needs. The third install downloads nothing (--no-index): it fails unless
# the locked localstripe is this pin, constraints.txt's (tests/deploy/test_images.py checks the two agree).
COPY lock/build.txt lock/localstripe.txt /tmp/lock/
RUN pip install --no-cache-dir --require-hashes -r /tmp/lock/build.txt \
 && pip install --no-cache-dir --require-hashes --no-build-isolation -r /tmp/lock/localstripe.txt \
 && pip install --no-cache-dir --no-index --no-deps localstripe==1.15.10 \
 && pip check \
 && rm -r /tmp/lock
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
