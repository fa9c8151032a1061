"""Home Assistant: the MQTT discovery payloads shems publishes per home (``discovery``) and the
values of its sensors, computed from the flow's records (``state``). Pure; publishing is
``flows/home_assistant.py``."""
