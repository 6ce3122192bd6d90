import Foundation
import Yams

/// Reads and validates scenario files.
public enum ScenarioLoader {
    public static func load(path: String) throws(ScenarioError) -> Scenario {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        return try parse(text, path: path)
    }

    /// Parses YAML text and validates it; `path` names the source in errors.
    public static func parse(_ text: String, path: String = "<scenario>") throws(ScenarioError) -> Scenario {
        let scenario: Scenario
        do {
            scenario = try YAMLDecoder().decode(Scenario.self, from: text)
        } catch let error as DecodingError {
            throw .malformed(path: path, detail: describe(error))
        } catch {
            throw .malformed(path: path, detail: "not valid YAML: \(error)")
        }
        let problems = ScenarioValidator.problems(in: scenario)
        if !problems.isEmpty { throw .invalid(path: path, problems: problems) }
        return scenario
    }

    /// The scenario files in `directory`, sorted, or the file itself.
    public static func files(at path: String) throws(ScenarioError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw .unreadable(path: path, reason: "no such file or directory")
        }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map { (path as NSString).appendingPathComponent($0) }
    }
}
