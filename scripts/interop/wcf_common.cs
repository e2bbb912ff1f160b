// Shared by the WCF programs of the interop matrix (wcf_service.cs, wcf_client.cs): the
// calculator contract, the seed's registration contract, the two bindings, and the one
// change made to WCF's defaults: the contract's namespace is given at run time.
using System;
using System.Collections.Generic;
using System.Reflection;
using System.Runtime.Serialization;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.ServiceModel.Description;
using System.Text;

namespace Interop
{
    // The calculator every service of the matrix serves; Instance names the WCF service
    // instance that answered. The namespace is a placeholder: Contracts.Retarget moves the
    // contract into the namespace the matrix gives.
    [ServiceContract(Name = "ICalculator", Namespace = "urn:interop:placeholder")]
    public interface ICalculator
    {
        [OperationContract]
        int Add(int a, int b);

        [OperationContract]
        string Instance();
    }

    // The router's SOAP registration contract (docs/api.md): the seed's IRegistrationService.
    [ServiceContract(Name = "IRegistrationService", Namespace = "http://www.thatindigogirl.com/samples/2008/01")]
    public interface IRegistrationService
    {
        [OperationContract]
        void Register(RegistrationInfo regInfo);

        [OperationContract]
        void Unregister(RegistrationInfo regInfo);
    }

    [DataContract(Namespace = "http://schemas.thatindigogirl.com/samples/2008/01")]
    public class RegistrationInfo
    {
        [DataMember(IsRequired = true, Order = 1)]
        public string Address { get; set; }

        [DataMember(IsRequired = true, Order = 2)]
        public string ContractName { get; set; }

        [DataMember(IsRequired = true, Order = 3)]
        public string ContractNamespace { get; set; }
    }

    public static class Contracts
    {
        // "basic": BasicHttpBinding (SOAP 1.1, no addressing); "soap12-wsa": a custom binding of
        // text encoding with SOAP 1.2 and WS-Addressing 1.0 over HTTP.
        public static Binding BindingNamed(string name)
        {
            switch (name)
            {
                case "basic":
                    return new BasicHttpBinding();
                case "soap12-wsa":
                    return new CustomBinding(
                        new TextMessageEncodingBindingElement(MessageVersion.Soap12WSAddressing10, Encoding.UTF8),
                        new HttpTransportBindingElement());
                default:
                    throw new ArgumentException("unknown binding " + name + "; expected basic or soap12-wsa");
            }
        }

        // Moves a contract into another namespace as if its [ServiceContract] had named it: the
        // actions ({namespace}/{contract}/{operation}, WCF's default form), the wrapper elements
        // and, when qualified, the parameters. Unqualified parameters are in no namespace, as
        // a WSDL with elementFormDefault="unqualified" describes them.
        public static void Retarget(ContractDescription contract, string ns, bool qualified)
        {
            contract.Namespace = ns;
            foreach (OperationDescription operation in contract.Operations)
            {
                var messages = new List<MessageDescription>(operation.Messages);
                operation.Messages.Clear();
                foreach (MessageDescription old in messages)
                {
                    bool reply = old.Direction == MessageDirection.Output;
                    string action = ns + "/" + contract.Name + "/" + operation.Name + (reply ? "Response" : "");
                    var message = new MessageDescription(action, old.Direction);
                    CopyRequestFlag(old, message);
                    message.Body.WrapperName = old.Body.WrapperName;
                    message.Body.WrapperNamespace = ns;
                    string partNs = qualified ? ns : "";
                    foreach (MessagePartDescription part in old.Body.Parts)
                        message.Body.Parts.Add(Copy(part, partNs));
                    if (old.Body.ReturnValue != null)
                        message.Body.ReturnValue = Copy(old.Body.ReturnValue, partNs);
                    operation.Messages.Add(message);
                }
            }
        }

        // Mono tells a request from a reply by an internal flag of the description it built,
        // which the public constructor leaves unset: carried over when there is one.
        static void CopyRequestFlag(MessageDescription from, MessageDescription to)
        {
            PropertyInfo flag = typeof(MessageDescription).GetProperty("IsRequest", BindingFlags.Instance | BindingFlags.NonPublic);
            if (flag != null)
                flag.SetValue(to, flag.GetValue(from, null), null);
        }

        static MessagePartDescription Copy(MessagePartDescription part, string ns)
        {
            return new MessagePartDescription(part.Name, ns) { Index = part.Index, Type = part.Type, MemberInfo = part.MemberInfo, Multiple = part.Multiple };
        }

        // A fault as one line: "FaultException code=NAME [NAMESPACE] subcode=NAME [NAMESPACE] reason=TEXT".
        public static string Describe(FaultException fault)
        {
            var line = new StringBuilder("FaultException");
            FaultCode code = fault.Code;
            string label = "code";
            while (code != null)
            {
                line.Append(" ").Append(label).Append("=").Append(code.Name).Append(" [").Append(code.Namespace).Append("]");
                code = code.SubCode;
                label = "sub" + label;
            }
            string reason = fault.Reason != null ? fault.Reason.ToString() : fault.Message;
            line.Append(" reason=").Append(reason.Replace("\n", " ").Replace("\r", " "));
            return line.ToString();
        }
    }
}
