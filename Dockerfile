# Production image: Node 22 LTS. One image for every node; SERVICES chooses what a node runs.
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY lib ./lib
COPY platform ./platform
COPY services ./services
COPY main ./main
# dev/ is compiled too: main loads it (dynamic import) only in embedded mode, never in production.
COPY dev ./dev
COPY test ./test
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The npm scripts' launcher (`npm run migrate`, `npm run repl`): runs dist/ without a compiler.
COPY --from=build /app/main/run.js ./main/run.js
USER node
EXPOSE 8000
# exec form: SIGTERM reaches node, which drains in-flight requests before exiting.
CMD ["node", "dist/main/start.js"]
