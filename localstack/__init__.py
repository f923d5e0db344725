"""The local stack: GCS, the Vertex AI and Cloud Monitoring APIs and model servers on 127.0.0.1 (``tune2serve local``)."""
