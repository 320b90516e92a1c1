"""The model file and how it runs: the flatbuffer reader, TFLite runtimes and delegates, the guard, labels."""
