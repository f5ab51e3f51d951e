from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        from ops.layer_drops import count_layer_drops
        from ops.log_filters import keep_probes_out_of_access_logs

        keep_probes_out_of_access_logs()
        count_layer_drops()
