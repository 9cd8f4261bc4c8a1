/**
 * Builds a broker of this platform: options from the config, the shared pool attached, and the services
 * SERVICES names (all seven by default). Used by `npm start`, the REPL and the integration tests alike.
 */
import { ServiceBroker, type BrokerOptions, type ServiceSchema } from "moleculer";
import type { Sequelize } from "sequelize";
import { brokerOptions } from "../../moleculer.config";
import type { Config } from "../shared/config";
import { DatabaseOutageMiddleware } from "./database-outage";
import { attachPlatform } from "./platform";
import createGateway from "../api-gateway/api-gateway.service";
import CoursesService from "../courses/courses.service";
import LabsService from "../labs/labs.service";
import AuthService from "../auth/auth.service";
import TasksService from "../tasks/tasks.service";
import LabInstancesService from "../lab-instances/lab-instances.service";
import AccessService from "../access/access.service";

type ServiceFactory = ServiceSchema | ((broker: ServiceBroker) => ServiceSchema);

const SERVICES: Record<string, ServiceFactory> = {
  "api-gateway": createGateway as (broker: ServiceBroker) => ServiceSchema,
  auth: AuthService as ServiceSchema,
  courses: CoursesService as ServiceSchema,
  labs: LabsService as ServiceSchema,
  tasks: TasksService as ServiceSchema,
  "lab-instances": LabInstancesService as ServiceSchema,
  access: AccessService as ServiceSchema,
};

export function createPlatformBroker(config: Config, sequelize: Sequelize, overrides: Partial<BrokerOptions> = {}): ServiceBroker {
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
