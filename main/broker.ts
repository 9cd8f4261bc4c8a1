/**
 * Builds a broker of this platform: options from the config, the shared pool attached, and the services
 * SERVICES names (all seven by default). Used by `npm start`, the REPL and the integration tests alike.
 */
import { ServiceBroker, type BrokerOptions, type ServiceSchema } from "moleculer";
import type { Sequelize } from "sequelize";
import { brokerOptions } from "../platform/moleculer.config";
import type { Config } from "../platform/config";
import { DatabaseOutageMiddleware } from "../platform/database-outage";
import { attachPlatform } from "../platform/platform";
import createGateway from "../services/api-gateway/api-gateway.service";
import CoursesService from "../services/courses/courses.service";
import LabsService from "../services/labs/labs.service";
import AuthService from "../services/auth/auth.service";
import TasksService from "../services/tasks/tasks.service";
import LabInstancesService from "../services/lab-instances/lab-instances.service";
import AccessService from "../services/access/access.service";

type ServiceFactory = ServiceSchema | ((broker: ServiceBroker) => ServiceSchema);

// Partial: config.services are strings (validated against ALL_SERVICES in platform/config.ts).
const SERVICES: Partial<Record<string, ServiceFactory>> = {
  "api-gateway": createGateway as (broker: ServiceBroker) => ServiceSchema,
  auth: AuthService as ServiceSchema,
  courses: CoursesService as ServiceSchema,
  labs: LabsService as ServiceSchema,
  tasks: TasksService,
  "lab-instances": LabInstancesService as ServiceSchema,
  access: AccessService as ServiceSchema,
};

export function createPlatformBroker(
  config: Config,
  sequelize: Sequelize,
  overrides: Partial<BrokerOptions> = {},
): ServiceBroker {
  const options = brokerOptions(config);
  const broker = new ServiceBroker({
    ...options,
    middlewares: [...(options.middlewares ?? []), DatabaseOutageMiddleware],
    ...overrides,
  });
  attachPlatform(broker, { config, sequelize });
  for (const name of config.services) {
    const factory = SERVICES[name];
    if (!factory) continue;
    broker.createService(typeof factory === "function" ? factory(broker) : factory);
  }
  return broker;
}
