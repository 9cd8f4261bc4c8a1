/** Unit tests (test/unit) need nothing; integration tests (test/integration) talk to the real
 * PostgreSQL, Redis and RabbitMQ named by TEST_DATABASE_URL, TEST_REDIS_URL, TEST_AMQP_URL. */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.[tj]s$": ["ts-jest", { tsconfig: "tsconfig.json", isolatedModules: true }]
  },
  transformIgnorePatterns: ["/node_modules/(?!(jose)/)"],
  testTimeout: 60000,
  globalSetup: "<rootDir>/test/global-setup.js"
};
