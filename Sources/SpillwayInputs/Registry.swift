import SpillwayConfig

/// The one list of built-in inputs. Adding an input: a folder here, a line below, a commented sample
/// in plugins.d/ (a test loads every sample), and fixture tests.
public enum InputRegistry {
    public static let all: [InputDescriptor] = [
        CPUInput.descriptor,
        MemoryInput.descriptor,
        DiskInput.descriptor,
        DiskIOInput.descriptor,
        NetInput.descriptor,
        SystemInput.descriptor,
        TailInput.descriptor,
        ExecInput.descriptor,
        ExecdInput.descriptor,
    ]
}
