package ledger;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;

/** Reads "schema-file hex-record" lines and prints each record as Java decoded it. */
public final class Decode {
  public static void main(String[] args) throws Exception {
    for (String line : Files.readAllLines(Path.of(args[0]))) {
      String[] parts = line.split(" ");
      Schema schema = new Schema.Parser().parse(Files.readString(Path.of(parts[0])));
      BinaryMessageDecoder<GenericRecord> decoder =
          new BinaryMessageDecoder<>(GenericData.get(), schema);
      GenericRecord record = decoder.decode(ByteBuffer.wrap(HexFormat.of().parseHex(parts[1])));
      long fp = SchemaNormalization.parsingFingerprint64(schema);
      System.out.println(Long.toHexString(fp) + " " + record);
    }
  }
}
