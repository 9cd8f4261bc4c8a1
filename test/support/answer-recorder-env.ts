/** Where a jest run's recorded API answers go (set by jest-global-setup.ts, read by answer-recorder.ts). */
export const ANSWERS_DIR_ENV = "AUTOLABS_ANSWERS_DIR";
