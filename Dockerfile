# One image recipe for every tweetshop service; pick the service at build time:
#   docker build --build-arg SERVICE=catalog -t tweetshop/catalog .
# The image holds tweetshop-contracts, tweetshop-platform and that one service,
# installed (not editable) over the third-party packages of the hashed lock lock/services.txt
# (lock/README.md), and runs `python -m $SERVICE` as a non-root user. libs/devstack never goes in.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN case "${SERVICE}" in \
      catalog|feed|checkout|tracking|webapp) ;; \
      *) echo "build with --build-arg SERVICE=catalog|feed|checkout|tracking|webapp (got '${SERVICE}')" >&2; exit 1 ;; \
    esac
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Third-party packages first, only from the hashed lock files: they change less often than the code, so this
# layer stays cached. The installer and build backend (lock/build.txt), then the runtime set of the five images
# (lock/services.txt), at the versions of `make install`; pip refuses a file whose hash is not in the lock.
COPY lock/build.txt lock/services.txt lock/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r lock/build.txt \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-build-isolation -r lock/services.txt
COPY constraints.txt ./
COPY libs/contracts/ libs/contracts/
COPY libs/platform/ libs/platform/
COPY services/${SERVICE}/ services/${SERVICE}/
# The packages from the tree, built with the locked setuptools; --no-deps: nothing is resolved past the lock
# (-c constraints.txt, the hand-edited pins, adds nothing then). pip check fails the build if the lock lacks
# something they need (run `make lock`).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation -c constraints.txt \
      ./libs/contracts ./libs/platform "./services/${SERVICE}" \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="tweetshop-${SERVICE}" \
      org.opencontainers.image.description="tweetshop ${SERVICE} service"
# A fixed numeric uid/gid so orchestrators can check runAsNonRoot.
RUN groupadd --system --gid 10001 tweetshop \
 && useradd --system --uid 10001 --gid tweetshop --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tweetshop
COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/tweetshop/healthcheck.py
# SERVICE stays in the environment: CMD and the health probe read it at run time.
ENV SERVICE=${SERVICE} \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/tweetshop
USER 10001:10001
# Listens on TWEETSHOP_HTTP_PORT; contract ports: catalog 8001, feed 8002, checkout 8003, tracking 8004.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/opt/tweetshop/healthcheck.py"]
# exec: python becomes PID 1 and gets SIGTERM from `docker stop` (a clean uvicorn shutdown).
CMD ["sh", "-c", "exec python -m \"$SERVICE\""]
