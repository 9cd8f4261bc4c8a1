# syntax=docker/dockerfile:1
# Production image: Node 22 LTS, cluster mode only. One image for every node; SERVICES chooses what a node runs.
#   docker build --build-arg APP_VERSION="$(node -p 'require("./package.json").version')" -t …/backend-platform:<tag> .
# No embedded mode here: dev/ (PGlite, the embedded IdP, demo data) and its devDependencies are not shipped, so
# DATABASE_URL, TRANSPORTER and OIDC_ISSUER must be set (start refuses with a clear message otherwise).

# Build: the compiler and every dependency; compiles the production layers only (tsconfig.build.json).
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY lib ./lib
COPY platform ./platform
COPY services ./services
COPY main ./main
# dev/ only so main/'s type-only and dynamic imports of it compile; its output is deleted, never shipped.
COPY dev ./dev
RUN npx tsc -p tsconfig.build.json && rm -rf dist/dev

# Runtime dependencies only. --ignore-scripts: no production dependency needs its install script (the one that
# has one, es5-ext, only prints a message; test/integration/production-image.test.ts checks package-lock.json).
FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:22-bookworm-slim
# Version reported by /api/v1/health and the metrics: the build arg, else package.json's version.
ARG APP_VERSION=""
# npm's cache and logs under /tmp: an operator's `npm run …` in a pod works on the read-only root filesystem.
ENV NODE_ENV=production \
    APP_VERSION=${APP_VERSION} \
    NPM_CONFIG_CACHE=/tmp/.npm \
    NPM_CONFIG_UPDATE_NOTIFIER=false
WORKDIR /app
# Owned by root and read-only to the process: the app cannot rewrite its own code (k8s mounts the root
# filesystem read-only as well; /tmp is the one writable path there).
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The npm scripts' launcher (`npm run migrate`, `npm run repl`): runs dist/ without a compiler.
COPY --from=build /app/main/run.js ./main/run.js
# The image's `node` user, numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000
EXPOSE 8000 3030
# Node-based (the slim image has no curl): GET /livez on the ops port (METRICS_PORT).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["node", "dist/main/healthcheck.js"]
# exec form: SIGTERM reaches node, which drains in-flight requests before exiting.
CMD ["node", "dist/main/start.js"]
