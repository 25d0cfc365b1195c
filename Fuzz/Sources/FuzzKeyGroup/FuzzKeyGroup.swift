import CFSignCore
import FuzzSupport

/// Key-group documents: parse, and when accepted, the written JSON must parse to the same group.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let group = try? KeyGroupDocument(json: bytes) {
        guard let again = try? KeyGroupDocument(json: group.json), again == group else {
            fatalError("key group does not round-trip")
        }
    }
    return 0
}

@_cdecl("FuzzKeyGroup_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
