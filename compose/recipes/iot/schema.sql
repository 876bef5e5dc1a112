-- The iot recipe's table: one row per device, its latest known state.
CREATE TABLE devices (
  id          text PRIMARY KEY,            -- e.g. 'thermo-kitchen'; the {key} of the state topic
  name        text NOT NULL,
  room        text,
  online      boolean NOT NULL DEFAULT true,
  temperature numeric(5,2),
  setpoint    numeric(5,2),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
